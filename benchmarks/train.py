"""Benchmark the trainer: tokens/s of frontload's training loop against a plain-PyTorch loop.

Workload: the same Llama-style decoder (RMSNorm, RoPE, SwiGLU, no biases) and the same batch in
both: global batch = ``--global-batch`` sequences of ``--seq-len`` random token ids, split into
micro batches of ``--micro-batch`` with gradient accumulation, AdamW, clipping at 1.0.

* baseline: a plain-PyTorch model written here (``torch.nn`` modules, ``scaled_dot_product_attention``)
  with ``torch.optim.AdamW`` and a hand-written accumulation loop — what one writes without a
  framework;
* frontload: :func:`frontload.train.loop.train_loop` with the Megatron-core ``GPTModel``,
  Megatron ``DistributedDataParallel`` and ``get_megatron_optimizer`` (the CPU compatibility
  module active), reading batches from an in-memory dataset through ``dataset_batches`` and
  writing its metrics events as in a real run.

Both run alternately in one process (``--rounds`` rounds of ``--steps`` timed steps after
``--warmup`` steps each) so background load hits both alike; the result is the median step time
of each and the ratio frontload / baseline in tokens/s (target >= 0.9).

    .venv/bin/python benchmarks/train.py          # default: 4 layers, hidden 256, seq 256 (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/train.py --full   # 8 layers, hidden 512, seq 512, global batch 32

No GPU is used; model FLOPs utilisation on a GPU is not measured by this script's CPU default
(``--device cuda`` runs the same comparison on a GPU when one is present).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore")


# ---- plain PyTorch baseline -------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = RMSNorm(hidden, eps)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.proj = nn.Linear(hidden, hidden, bias=False)
        self.mlp_norm = RMSNorm(hidden, eps)
        self.fc1 = nn.Linear(hidden, 2 * ffn, bias=False)
        self.fc2 = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x, cos, sin):
        b, s, h = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        # The RoPE tables are fp32; under bf16 autocast q and k are bf16 and must stay so.
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, h))
        gate, up = self.fc1(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.fc2(F.silu(gate) * up)


class PlainLlama(nn.Module):
    def __init__(self, cfg) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.blocks = nn.ModuleList(
            Block(cfg.hidden, cfg.heads, cfg.ffn_hidden, cfg.norm_eps) for _ in range(cfg.layers)
        )
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=cfg.init_std)
        d = cfg.head_dim
        inv = 1.0 / (cfg.rope_base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        ang = torch.outer(torch.arange(cfg.seq_len, dtype=torch.float32), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        return self.out(self.norm(x))


def plain_steps(cfg, data, args, n_steps: int) -> list[float]:
    """Step times of the plain loop (same batch split, AdamW, clipping)."""
    model = PlainLlama(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    accum = args.global_batch // args.micro_batch
    times, k = [], 0
    for _ in range(n_steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            batch = data[k : k + args.micro_batch]
            k += args.micro_batch
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            (loss / (args.global_batch * cfg.seq_len)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


# ---- frontload ---------------------------------------------------------------------------------
class RandomTokens:
    """An in-memory dataset shaped like the mix's PhaseDataset items."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        s = data.shape[1] - 1
        self.pos = torch.arange(s)
        self.mask = torch.ones(s)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, k: int):
        row = self.data[k]
        return {"tokens": row[:-1], "labels": row[1:], "loss_mask": self.mask, "position_ids": self.pos}


def frontload_steps(cfg, data, args, n_steps: int) -> list[float]:
    """Step times of frontload's loop, read back from its own metrics events."""
    from frontload.core.events import RunFolder, read_events
    from frontload.train.loop import LoopConfig, TrainState, dataset_batches, token_loss, train_loop
    from frontload.train.optim import OptimConfig, build_optimizer

    model = cfg.build()
    opt = build_optimizer(model, OptimConfig(lr=1e-3, schedule="constant"), n_steps)
    state = TrainState(model=opt.model, model_config=cfg, optimizer=opt, phase="pretrain")
    loop = LoopConfig(steps=n_steps, global_batch=args.global_batch, micro_batch=args.micro_batch, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(tmp, stage="pretrain", config={})
        # The final checkpoint is written after the last step's timing, so it does not count.
        train_loop(state, dataset_batches(RandomTokens(data), loop, 0, 1), token_loss, loop, run)
        run.close()
        events = read_events(f"{tmp}/events/metrics.rank0.jsonl")[0]
    tokens = args.global_batch * cfg.seq_len
    return [tokens / e["tokens_per_s"] for e in events]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="8 layers, hidden 512, seq 512, global batch 32")
    ap.add_argument("--layers", type=int, default=4, help="transformer blocks")
    ap.add_argument("--hidden", type=int, default=256, help="model width")
    ap.add_argument("--heads", type=int, default=4, help="attention heads")
    ap.add_argument("--seq-len", type=int, default=256, help="sequence length")
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    ap.add_argument("--global-batch", type=int, default=16, help="sequences per optimizer step")
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per forward/backward")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of baseline and frontload")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.full:
        args.layers, args.hidden, args.heads, args.seq_len, args.global_batch = 8, 512, 8, 512, 32
    if args.threads:
        torch.set_num_threads(args.threads)

    from frontload.train.model import ModelConfig
    from frontload.train.runtime import init_distributed

    init_distributed(seed=0)
    cfg = ModelConfig(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        seq_len=args.seq_len,
        vocab_size=args.vocab,
        ffn_hidden=64 * math.ceil(8 * args.hidden / 3 / 64),
    )
    n = args.warmup + args.steps
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, args.vocab, (n * args.global_batch, args.seq_len + 1), generator=g)
    print(
        f"model: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, seq {args.seq_len}, "
        f"{cfg.num_parameters() / 1e6:.1f}M params; global batch {args.global_batch} "
        f"(micro {args.micro_batch}); {torch.get_num_threads()} threads"
    )
    base, ours = [], []
    for r in range(args.rounds):
        base += plain_steps(cfg, data, args, n)[args.warmup :]
        ours += frontload_steps(cfg, data, args, n)[args.warmup :]
        print(f"round {r + 1}: baseline {statistics.median(base):.3f} s/step, frontload {statistics.median(ours):.3f}")
    tokens = args.global_batch * args.seq_len
    tb, tf = tokens / statistics.median(base), tokens / statistics.median(ours)
    print(f"plain PyTorch loop : {tb:10.0f} tokens/s")
    print(f"frontload trainer  : {tf:10.0f} tokens/s")
    print(f"ratio frontload / baseline: {tf / tb:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
