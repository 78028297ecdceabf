"""Benchmark of the RL phase: where a GRPO step's time goes, with the in-process sampler and with vLLM.

Workload: a Llama-style model from a random init (completions run long and stop only when a stop id
is drawn by chance; throughput is counted per completion token), ``--prompts`` addition prompts per step x ``--group``
completions each, two optimiser steps per rollout batch, KL to the reference on. Measured in one
run, on the same model and prompts:

* ``frontload.train.rl.rl`` with ``rollout_backend = "megatron"`` and with ``"vllm"``; per GRPO
  step (best over steps 2..n, step 1 pays warm-up; best-of because the machine's load drifts) the split that the run's metrics events record:
  generation, log-prob recomputation (old policy for vLLM, reference for both), training (the
  optimiser steps) and weight sync (vLLM only: ``reload_weights`` in place);
* generation throughput (completion tokens/s) of our sampler inside RL against the baseline, vLLM's
  own offline ``LLM.generate`` on the same prompt token ids with the same ``n``, ``max_tokens`` and
  temperature, timed standalone in the same process (best of 3, before and after the RL runs).

Default (a minute or two on two cores): 2 layers, hidden 64, seq 128, 8 prompts x 8, 48 new tokens,
4 GRPO steps. ``--full``: 4 layers, hidden 256, 4 heads (head_dim 64), seq 512, 16 x 8, 256 new
tokens, 6 steps.

    .venv/bin/python benchmarks/rl.py
    .venv/bin/python benchmarks/rl.py --full
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tokenizer(out: Path, vocab_size: int = 512):
    """A small frontload tokenizer trained on Python's shipped documentation (nothing downloaded)."""
    from pydoc_data.topics import topics

    from frontload.corpus.tokenizer import load_tokenizer, train_tokenizer_from_texts

    if (out / "tokenizer.json").exists():
        return load_tokenizer(out)
    return train_tokenizer_from_texts([topics[k] for k in sorted(topics)], out, vocab_size=vocab_size)


def addition_rows(pairs) -> list[dict]:
    """``{"question", "answer"}`` rows of one-digit additions."""
    return [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in pairs]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def model_config(tokenizer, *, layers: int, hidden: int, heads: int, seq_len: int):
    from frontload.train.model import ModelConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelConfig(layers=layers, hidden=hidden, heads=heads, seq_len=seq_len, vocab_size=tokenizer.vocab_size)


def init_checkpoint(run_dir: Path, cfg, tokenizer, seed: int = 0) -> Path:
    """A freshly initialised model saved as an ``sft`` checkpoint (timing needs no trained weights)."""
    from frontload.train.checkpoint import save_checkpoint
    from frontload.train.runtime import init_distributed

    init_distributed(seed=seed)
    model = cfg.build()
    return save_checkpoint(
        run_dir,
        model=model,
        model_config=cfg,
        phase="sft",
        step=0,
        consumed_samples=0,
        tokenizer_dir=tokenizer.path,
        tokenizer_fingerprint=tokenizer.fingerprint,
    )


def _rl_run(root: Path, backend: str, ckpt: Path, prompts: Path, a: argparse.Namespace) -> list[dict]:
    from frontload.core.config import from_mapping
    from frontload.core.events import read_events
    from frontload.train.rl import RLConfig, rl

    cfg = from_mapping(
        RLConfig,
        dict(
            run_dir=str(root / f"rl_{backend}"),
            init_from=str(ckpt),
            prompts=str(prompts),
            steps=a.steps,
            prompts_per_step=a.prompts,
            group_size=a.group,
            max_new_tokens=a.new_tokens,
            minibatches=2,
            micro_batch=16,
            loss={"kl_coef": 0.01},
            reward={"format": 0.1},
            rollout_backend=backend,
            progress=False,
        ),
        where="benchmark",
    )
    rl(cfg)
    metrics, _ = read_events(Path(cfg.run_dir) / "events" / "metrics.rank0.jsonl")
    rollouts, _ = read_events(Path(cfg.run_dir) / "events" / "rollouts.rank0.jsonl")
    per_step: dict[int, dict] = {}
    for m in metrics:
        s = per_step.setdefault(m["rl_step"], {"generate_s": 0.0, "logprobs_s": 0.0, "train_s": 0.0, "sync_s": 0.0})
        for k in s:
            s[k] += m.get(k, 0.0)
    for r in rollouts:
        per_step[r["step"]]["tokens"] = per_step[r["step"]].get("tokens", 0) + r["length"]
    return [per_step[k] for k in sorted(per_step)]


def _vllm_offline(root: Path, ckpt: Path, tokenizer, prompts: list[str], a: argparse.Namespace) -> tuple[float, int]:
    """vLLM's own offline generation on the same prompt ids: (seconds of the best of 3 runs, tokens)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from frontload.train.checkpoint import load_model
    from frontload.train.sampling import VLLMSampler

    model, cfg, _ = load_model(ckpt)
    engine = VLLMSampler(model, cfg, tokenizer, ckpt / "tokenizer", root / "offline", seed=0)
    sp = SamplingParams(n=a.group, temperature=1.0, max_tokens=a.new_tokens, detokenize=False, seed=1)
    reqs = [TokensPrompt(prompt_token_ids=ids) for ids in tokenizer.encode_batch(prompts)]
    best, tokens = float("inf"), 0
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            outs = engine.llm.generate(reqs, sp, use_tqdm=False)
            best = min(best, time.perf_counter() - t0)
            tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    finally:
        engine.close()
    return best, tokens


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="the larger model and workload (see the module docstring)")
    p.add_argument("--steps", type=int, help="GRPO steps per backend")
    p.add_argument("--prompts", type=int, help="prompts per GRPO step")
    p.add_argument("--group", type=int, help="completions per prompt")
    p.add_argument("--new-tokens", dest="new_tokens", type=int, help="max new tokens per completion")
    p.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    a = p.parse_args(argv)
    size = (
        dict(layers=4, hidden=256, heads=4, seq_len=512) if a.full else dict(layers=2, hidden=64, heads=2, seq_len=128)
    )
    defaults = (6, 16, 8, 256) if a.full else (4, 8, 8, 48)
    for name, value in zip(("steps", "prompts", "group", "new_tokens"), defaults):
        if getattr(a, name) is None:
            setattr(a, name, value)

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    root = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="frontload-bench-rl-"))
    root.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(root / "tokenizer")
    cfg = model_config(tok, **size)
    ckpt = init_checkpoint(root / "init", cfg, tok)
    rng = random.Random(0)
    # The RL set is exactly one step's prompts, so every step and the offline baseline decode the same prompts.
    rows = addition_rows([(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(a.prompts)])
    prompts = write_jsonl(root / "prompts.jsonl", rows)

    from frontload.core.chat import render_prompt

    texts = [render_prompt(r["question"]) for r in rows]
    # The baseline is measured before and after the RL runs and the best kept: on a shared machine the
    # load drifts over a run, and a best-of is the least sensitive to it.
    first = _vllm_offline(root, ckpt, tok, texts, a)
    results = {b: _rl_run(root, b, ckpt, prompts, a) for b in ("megatron", "vllm")}
    offline_s, offline_tokens = min(first, _vllm_offline(root, ckpt, tok, texts, a))

    print(
        f"model {size}, {a.prompts} prompts x {a.group} completions, {a.new_tokens} new tokens, {a.steps} GRPO steps"
    )
    print(f"{'backend':10} {'generate':>9} {'logprobs':>9} {'train':>9} {'sync':>9} {'step':>9} {'gen tok/s':>10}")
    gen_rate = {}
    for backend, steps in results.items():
        timed = steps[1:] or steps  # step 1 pays one-off warm-up (vLLM engine start is outside the split)
        med = {k: min(s[k] for s in timed) for k in ("generate_s", "logprobs_s", "train_s", "sync_s")}
        gen_rate[backend] = max(s["tokens"] / s["generate_s"] for s in timed)
        total = sum(med.values())
        print(
            f"{backend:10} {med['generate_s']:9.3f} {med['logprobs_s']:9.3f} {med['train_s']:9.3f} "
            f"{med['sync_s']:9.3f} {total:9.3f} {gen_rate[backend]:10.0f}"
        )
    offline = offline_tokens / offline_s
    print(f"{'vllm offline':10} {offline_s:9.3f} {'':>9} {'':>9} {'':>9} {'':>9} {offline:10.0f}")
    print(
        f"generation tokens/s vs vLLM offline (baseline): in-process sampler {gen_rate['megatron'] / offline:.2f}x, "
        f"vLLM inside RL {gen_rate['vllm'] / offline:.2f}x"
    )


if __name__ == "__main__":
    main()
