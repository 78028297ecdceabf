"""Evidence that the RL phase learns: GRPO raises the reward and held-out accuracy of a tiny SFT model.

Workload: one arithmetic family, one-digit additions ``What is a + b?``. A 2-layer Llama-style model
(hidden 64) is first fine-tuned through the shared training loop (next-token loss on the response
``The answer is \\boxed{a+b}.<|end|>`` only) until it has the format but gets only some sums right.
The 100 pairs are split: 70 form the RL set, 30 are held out (never seen by RL). Then
``frontload.train.rl.rl`` runs a fixed number of GRPO steps from that SFT checkpoint. Reported,
before (the SFT checkpoint) and after (the RL checkpoint), with ``frontload.train.evaluate``:

* held-out accuracy, greedy (the 30 held-out sums);
* pass@1 over 8 samples at temperature 1 on the RL set and on the held-out set (what the mean
  reward measures);
* the mean reward logged by the first and the last GRPO steps.

A demo, not a timing: wall time is printed only for orientation.

    .venv/bin/python benchmarks/rl_learns.py                 # 100 GRPO steps x 16 prompts x 8 (two to three minutes on 2 cores)
    .venv/bin/python benchmarks/rl_learns.py --steps 300     # longer
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from rl import addition_rows, make_tokenizer, model_config, write_jsonl


def sft_checkpoint(root: Path, tokenizer, cfg, pairs, steps: int, seed: int = 0) -> Path:
    """Fine-tune a fresh model on ``pairs`` through the shared loop; returns its final checkpoint."""
    import torch

    from frontload.core.chat import render_example
    from frontload.core.events import RunFolder
    from frontload.train.loop import LoopConfig, TrainState, token_loss, train_loop
    from frontload.train.optim import OptimConfig, build_optimizer
    from frontload.train.runtime import init_distributed

    init_distributed(seed=seed)
    model = cfg.build()
    optim = build_optimizer(model, OptimConfig(lr=3e-3, min_lr=3e-4, weight_decay=0.0, warmup_steps=10), steps)
    state = TrainState(
        model=optim.model,
        model_config=cfg,
        optimizer=optim,
        phase="sft",
        tokenizer_dir=str(tokenizer.path),
        tokenizer_fingerprint=tokenizer.fingerprint,
    )
    examples = [render_example(f"What is {a} + {b}?", None, str(a + b)) for a, b in pairs]
    encoded = [(tokenizer.encode(p), tokenizer.encode(r) + [tokenizer.eod_id]) for p, r in examples]
    batch = 16

    def batches(step: int, consumed: int):
        rng = random.Random(f"{seed}:{step}")
        chosen = [encoded[rng.randrange(len(encoded))] for _ in range(batch)]
        width = max(len(p) + len(r) for p, r in chosen)
        tokens = torch.full((batch, width), tokenizer.pad_id)
        mask = torch.zeros(batch, width)
        for i, (p, r) in enumerate(chosen):
            tokens[i, : len(p) + len(r)] = torch.tensor(p + r)
            mask[i, len(p) - 1 : len(p) + len(r) - 1] = 1  # loss on the response only
        labels = torch.roll(tokens, -1, 1)
        pos = torch.arange(width)[None].expand(batch, width)
        return [
            {"tokens": tokens, "labels": labels, "loss_mask": mask, "position_ids": pos, "source": ["sft"] * batch}
        ]

    run = RunFolder(root, stage="sft", config={"pairs": len(pairs), "steps": steps}, phase="sft")
    try:
        return train_loop(
            state, batches, token_loss, LoopConfig(steps=steps, global_batch=batch, micro_batch=batch), run
        )
    finally:
        run.close()


def scores(ckpt: Path, tasks: dict[str, Path], samples: int) -> dict[str, float]:
    """Greedy held-out accuracy and sampled pass@1 per task."""
    from frontload.train.evaluate import EvalConfig, TaskSpec, evaluate

    out = {}
    greedy = EvalConfig(max_new_tokens=24, progress=False)
    for r in evaluate(ckpt, [TaskSpec(path=str(tasks["heldout"]), name="heldout")], greedy):
        out["heldout greedy accuracy"] = r.value
    sampled = EvalConfig(samples=samples, temperature=1.0, max_new_tokens=24, progress=False, seed=3)
    specs = [TaskSpec(path=str(p), name=n) for n, p in tasks.items()]
    for r in evaluate(ckpt, specs, sampled):
        if r.metric == "pass@1":
            out[f"{r.task} pass@1 (T=1, n={samples})"] = r.value
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100, help="GRPO steps")
    p.add_argument("--sft-steps", dest="sft_steps", type=int, default=150, help="SFT optimiser steps before RL")
    p.add_argument("--prompts", type=int, default=16, help="prompts per GRPO step")
    p.add_argument("--group", type=int, default=8, help="completions per prompt")
    p.add_argument("--lr", type=float, default=3e-4, help="RL learning rate")
    p.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    a = p.parse_args(argv)

    import torch

    from frontload.core.config import from_mapping
    from frontload.core.events import read_events
    from frontload.train.rl import RLConfig, rl

    torch.set_num_threads(1)  # tiny matmuls: threads only add contention on a shared machine
    t0 = time.time()
    root = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="frontload-rl-learns-"))
    root.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(root / "tokenizer")
    cfg = model_config(tok, layers=2, hidden=64, heads=2, seq_len=64)
    pairs = [(x, y) for x in range(10) for y in range(10)]
    random.Random(0).shuffle(pairs)
    rl_pairs, heldout_pairs = pairs[:70], pairs[70:]
    tasks = {
        "rl_set": write_jsonl(root / "rl_set.jsonl", addition_rows(rl_pairs)),
        "heldout": write_jsonl(root / "heldout.jsonl", addition_rows(heldout_pairs)),
    }
    sft = sft_checkpoint(root / "sft", tok, cfg, rl_pairs, a.sft_steps)
    before = scores(sft, tasks, samples=8)

    config = from_mapping(
        RLConfig,
        dict(
            run_dir=str(root / "rl"),
            init_from=str(sft),
            prompts=str(tasks["rl_set"]),
            steps=a.steps,
            prompts_per_step=a.prompts,
            group_size=a.group,
            max_new_tokens=24,
            minibatches=2,
            micro_batch=32,
            optim={"lr": a.lr, "min_lr": a.lr},
            loss={"kl_coef": 0.01},
            progress=True,
        ),
        where="rl_learns",
    )
    final = rl(config)
    after = scores(final, tasks, samples=8)
    metrics, _ = read_events(root / "rl" / "events" / "metrics.rank0.jsonl")
    by_step: dict[int, float] = {}
    for m in metrics:
        by_step[m["rl_step"]] = m["reward_mean"]
    rewards = [by_step[k] for k in sorted(by_step)]
    k = max(1, len(rewards) // 5)

    print(f"\nGRPO {a.steps} steps x {a.prompts} prompts x {a.group} completions, from {sft}")
    print(f"{'':44} {'before':>8} {'after':>8}")
    for key in before:
        print(f"{key:44} {before[key]:8.3f} {after[key]:8.3f}")
    print(f"{f'mean reward, first / last {k} GRPO steps':44} {sum(rewards[:k]) / k:8.3f} {sum(rewards[-k:]) / k:8.3f}")
    print(f"(wall time {time.time() - t0:.0f} s; run folders in {root})")


if __name__ == "__main__":
    main()
