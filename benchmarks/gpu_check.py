"""GPU check: frontload's own training loop on one GPU in bf16, against a plain-PyTorch loop in the same run.

What it runs, in order (each part's figures or its error go into the JSON; one failing part does
not hide the others):

1. ``plain``: a plain-PyTorch Llama of the same architecture (``torch.nn``, SDPA, bf16 autocast,
   fused AdamW, clipping) and the same batches; tokens/s.
2. ``frontload``: :func:`frontload.train.loop.train_loop` with the Megatron-core ``GPTModel`` in
   bf16 (Transformer Engine spec when installed, else the local spec with PyTorch SDPA), Megatron
   DDP and optimizer; tokens/s, TFLOP/s and model FLOPs utilisation against the chip's dense bf16
   peak, and the ratio to ``plain`` (the result).
3. ``checkpoint``: the trained state saved (seconds, GiB), one more step, then a fresh model and
   optimizer resumed from the checkpoint run the same step: the losses must agree.
4. ``sft``: one SFT step with a loss mask (prompt half masked): the loss covers exactly the
   response tokens.

The default is a ~1B Llama (16 layers, hidden 2048, 16 heads, seq 4096, vocab 32000) and finishes
in a few minutes on an H100; ``--cpu-smoke`` runs the same code at a tiny size on the CPU in
seconds (the test suite runs it), bf16 included. FLOPs per token are ``6 N + 12 L h s`` (attention counted
without the causal saving, as in the PaLM paper's MFU).

    bash benchmarks/gpu_wheels.sh                 # here, once: wheels for the bare GPU machine into .whl/
    bash benchmarks/gpu_check.sh                  # on the GPU machine (installs .whl/, then runs this)
    python benchmarks/gpu_check.py --cpu-smoke    # anywhere
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Dense bf16 peak TFLOP/s (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM and NVL report "H100 80GB HBM3" / "H100 NVL"
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
)


def bootstrap() -> None:
    """Make ``frontload.train`` importable from a plain checkout (the GPU machine does not install it)."""
    try:
        import frontload
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import frontload
    if importlib.util.find_spec("frontload.train") is None:
        # pyproject maps frontload.<stage> to the top-level stage folders; a search path does the same.
        frontload.__path__.append(str(ROOT))


def plain_module():
    """benchmarks/train.py (the plain-PyTorch Llama), loaded by path: a module named ``train`` would clash."""
    spec = importlib.util.spec_from_file_location("frontload_bench_train", ROOT / "benchmarks" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_tflops(name: str) -> float | None:
    for key, peak in PEAK_BF16_TFLOPS:
        if key in name:
            return peak
    return None


class Tokens:
    """In-memory samples shaped like the mix's dataset items; ``prompt`` tokens of each are loss-masked."""

    def __init__(self, data, prompt: int = 0) -> None:
        import torch

        self.data = data
        s = data.shape[1] - 1
        self.pos = torch.arange(s)
        self.mask = torch.ones(s)
        self.mask[:prompt] = 0

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, k: int):
        row = self.data[k]
        return {"tokens": row[:-1], "labels": row[1:], "loss_mask": self.mask, "position_ids": self.pos}


class _Stop(Exception):
    """Raised by a batch source to end a loop before its final checkpoint (timings only)."""


def run_loop(state, dataset, args, steps: int, phase: str | None = None) -> list[dict]:
    """``steps`` optimizer steps of frontload's loop from ``state``; the metrics record of each."""
    from frontload.core.events import RunFolder
    from frontload.train.loop import LoopConfig, dataset_batches, token_loss, train_loop

    loop = LoopConfig(steps=10**9, global_batch=args.global_batch, micro_batch=args.micro_batch, progress=False)
    inner = dataset_batches(dataset, loop, 0, 1)
    stop_at = state.step + steps
    records: list[dict] = []

    def batches(step: int, consumed: int):
        if step >= stop_at:
            raise _Stop
        return inner(step, consumed)

    if phase is not None:
        state.phase = phase
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(tmp, stage=state.phase, config={})
        try:
            train_loop(state, batches, token_loss, loop, run, on_step=lambda s, r: records.append(dict(r)))
        except _Stop:
            pass
        finally:
            run.close()
    return records


def build_state(cfg, steps: int):
    from frontload.train.loop import TrainState
    from frontload.train.optim import OptimConfig, build_optimizer

    model = cfg.build()
    opt = build_optimizer(model, OptimConfig(lr=1e-4, schedule="constant"), steps, bf16=cfg.bf16)
    return TrainState(model=opt.model, model_config=cfg, optimizer=opt, phase="pretrain")


def plain_part(cfg, data, args, device, bf16: bool) -> dict:
    import torch
    import torch.nn.functional as F

    plain = plain_module()
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1B model's init on the CPU takes seconds
        model = plain.PlainLlama(cfg)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
    accum = args.global_batch // args.micro_batch
    times, losses, k = [], [], 0
    for _ in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accum):
            batch = data[k : k + args.micro_batch].to(device, non_blocking=True)
            k += args.micro_batch
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            (loss / (args.global_batch * cfg.seq_len)).backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(total / (args.global_batch * cfg.seq_len))
    del model, opt
    free(device)
    step_s = statistics.median(times[args.warmup :])
    return {"step_s": step_s, "tokens_per_s": args.global_batch * cfg.seq_len / step_s, "first_loss": losses[0]}


def frontload_part(cfg, data, args, device, result: dict) -> None:
    """Benchmark, checkpoint round trip and SFT step on one model (only one ~1B state lives at a time)."""

    state = build_state(cfg, args.warmup + args.steps + 2)
    spec = type(_bare(state.model).decoder.layers[0].self_attention.core_attention).__name__
    records = run_loop(state, Tokens(data), args, args.warmup + args.steps)
    timed = [r["tokens_per_s"] for r in records[args.warmup :]]
    tps = statistics.median(timed)
    tflops = tps * cfg.flops_per_token() / 1e12
    result["frontload"] = {
        "core_attention": spec,
        "tokens_per_s": tps,
        "step_s": args.global_batch * cfg.seq_len / tps,
        "tflops": tflops,
        "first_loss": records[0]["loss"],
        "last_loss": records[-1]["loss"],
    }
    if result.get("peak_tflops"):
        result["frontload"]["mfu"] = tflops / result["peak_tflops"]
    if "tokens_per_s" in result.get("plain", {}):
        result["ratio_frontload_over_plain"] = tps / result["plain"]["tokens_per_s"]
        result["plain"]["tflops"] = result["plain"]["tokens_per_s"] * cfg.flops_per_token() / 1e12
        if result.get("peak_tflops"):
            result["plain"]["mfu"] = result["plain"]["tflops"] / result["peak_tflops"]
    print_part("frontload", result["frontload"])

    # Checkpoint round trip: save, one more step; a fresh state resumed from the save runs that step too.
    ckpt_root = Path(args.checkpoint_dir or tempfile.mkdtemp(prefix="frontload-gpu-check-"))
    try:
        sync(device)
        t0 = time.perf_counter()
        ckpt = state.save(ckpt_root)
        sync(device)
        save_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
        step_at_save, consumed = state.step, state.consumed_samples
        cont = run_loop(state, Tokens(data), args, 1)[0]

        # SFT: the second half of each sample is the "response"; the loss must count only those tokens.
        prompt = cfg.seq_len // 2
        sft = run_loop(state, Tokens(data, prompt=prompt), args, 1, phase="sft")[0]
        result["sft"] = {
            "loss": sft["loss"],
            "loss_units": sft["loss_units"],
            "expected_units": args.global_batch * (cfg.seq_len - prompt),
            "ok": sft["loss_units"] == args.global_batch * (cfg.seq_len - prompt) and math.isfinite(sft["loss"]),
        }
        print_part("sft", result["sft"])
        del state
        free(device)

        t0 = time.perf_counter()
        fresh = build_state(cfg, args.warmup + args.steps + 2)
        fresh.resume(ckpt_root)
        sync(device)
        load_s = time.perf_counter() - t0
        again = run_loop(fresh, Tokens(data), args, 1)[0]
        result["checkpoint"] = {
            "save_s": save_s,
            "build_and_load_s": load_s,
            "gib": size / 2**30,
            "resumed_step": fresh.step - 1,
            "step_at_save": step_at_save,
            "resumed_consumed": again["sample_start"],
            "consumed_at_save": consumed,
            "loss_continued": cont["loss"],
            "loss_resumed": again["loss"],
            "grad_norm_continued": cont["grad_norm"],
            "grad_norm_resumed": again["grad_norm"],
            "ok": again["sample_start"] == consumed
            and math.isclose(again["loss"], cont["loss"], rel_tol=1e-5, abs_tol=1e-6),
        }
        print_part("checkpoint", result["checkpoint"])
        del fresh
    finally:
        if not args.checkpoint_dir:
            import shutil

            shutil.rmtree(ckpt_root, ignore_errors=True)
        free(device)


def _bare(model):
    from frontload.train.model import unwrap

    return unwrap(model)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def print_part(name: str, figures: dict) -> None:
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"[{name}] {shown}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="the same code path, tiny model, on the CPU")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--global-batch", type=int, default=8, help="sequences per optimizer step")
    ap.add_argument("--micro-batch", type=int, default=2, help="sequences per forward/backward")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps")
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--out", default="gpu_check.json", help="where the JSON of figures goes")
    ap.add_argument("--checkpoint-dir", default=None, help="keep the round-trip checkpoint here (default: temp)")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        args.layers, args.hidden, args.heads, args.seq_len, args.vocab = 2, 64, 2, 32, 256
        args.global_batch, args.micro_batch, args.warmup, args.steps = 4, 2, 1, 2

    bootstrap()
    import torch

    from frontload.train import compat
    from frontload.train.model import ModelConfig, has_transformer_engine
    from frontload.train.runtime import init_distributed

    on_gpu = compat.cuda_available() and not args.cpu_smoke
    if compat.cuda_available() and args.cpu_smoke:
        print("--cpu-smoke on a machine with CUDA: the CUDA device is used at the tiny size")
        on_gpu = True
    device = compat.device()
    name = torch.cuda.get_device_name() if on_gpu else "cpu"
    result: dict = {
        "device": name,
        "peak_tflops": peak_tflops(name) if on_gpu else None,
        "torch": torch.__version__,
        "transformer_engine": has_transformer_engine(),
        "errors": {},
    }
    try:
        import megatron.core

        result["megatron_core"] = megatron.core.__version__
    except Exception as e:  # noqa: BLE001 - reported, the parts below fail with the details
        result["errors"]["import"] = repr(e)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    init_distributed(seed=0)
    cfg = ModelConfig(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        seq_len=args.seq_len,
        vocab_size=args.vocab,
        # bf16 on the CPU too: the smoke then runs the GPU path's Float16Module and fp32 main params.
        bf16=True,
    )
    result["model"] = {
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "heads": cfg.heads,
        "seq_len": cfg.seq_len,
        "vocab": cfg.vocab_size,
        "params": cfg.num_parameters(),
        "flops_per_token": cfg.flops_per_token(),
        "global_batch": args.global_batch,
        "micro_batch": args.micro_batch,
        "bf16": cfg.bf16,
    }
    print_part("setup", {"device": name, "params_B": cfg.num_parameters() / 1e9, "peak": result["peak_tflops"]})
    n_samples = (args.warmup + args.steps + 4) * args.global_batch
    data = torch.randint(0, args.vocab, (n_samples, args.seq_len + 1), generator=torch.Generator().manual_seed(0))

    t_start = time.perf_counter()
    for part in ("plain", "frontload"):
        t0 = time.perf_counter()
        try:
            if part == "plain":
                result["plain"] = plain_part(cfg, data, args, device, bf16=True)
                print_part("plain", result["plain"])
            else:
                frontload_part(cfg, data, args, device, result)
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' figures
            result["errors"][part] = f"{e!r}\n{traceback.format_exc()[-2000:]}"
            print(f"[{part}] FAILED: {e!r}", flush=True)
            traceback.print_exc()
            free(device)
        result.setdefault("seconds", {})[part] = time.perf_counter() - t0
    result["seconds"]["total"] = time.perf_counter() - t_start
    if on_gpu:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    Path(args.out).write_text(json.dumps(result, indent=2))
    summary = {
        k: result.get(k)
        for k in ("device", "ratio_frontload_over_plain", "max_memory_gib")
        if result.get(k) is not None
    }
    if "frontload" in result:
        summary.update(tokens_per_s=result["frontload"]["tokens_per_s"], tflops=result["frontload"]["tflops"])
        if "mfu" in result["frontload"]:
            summary["mfu"] = result["frontload"]["mfu"]
    print_part("result", summary)
    print(f"figures written to {args.out}")
    ok = not result["errors"] and result.get("sft", {}).get("ok") and result.get("checkpoint", {}).get("ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
