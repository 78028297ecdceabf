"""Benchmark of sampled evaluation: pass@k with n = 32 samples per question on CPU.

Workload: a random-weight tiny model (2 layers, hidden 64, 2 heads, context 256; ``--layers`` and
``--hidden`` to change it), a 512-piece tokenizer trained on Python's shipped docs, ``--questions``
held-out arithmetic questions from frontload's generators, ``--samples`` samples each at temperature
1.0 and ``--new`` new tokens at most (a random model rarely stops early, so this is the worst case).
Measured: wall time of :func:`frontload.train.evaluate.evaluate_task` (sampling, judging, pass@k curve)

- the baseline: ``batch_size = samples``, one question's samples per decode batch (the evaluator's
  old default of 32), and
- wide batches: ``--batch`` rows per decode batch (default 512, i.e. 16 questions at n = 32),

best of ``--repeats`` runs after a warm-up, one torch thread. It checks both give the same scores
(a sample depends only on its seed and (question, sample) index, never on its batch). It also times
the teacher-forced metrics (answer_nll, solution_nll) on their own.

    .venv/bin/python benchmarks/eval_passk.py        # about half a minute on two cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def _best(fn, repeats: int):
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=16, help="held-out questions")
    ap.add_argument("--samples", type=int, default=32, help="samples per question (n of pass@k)")
    ap.add_argument("--new", type=int, default=48, help="new tokens per sample at most")
    ap.add_argument("--batch", type=int, default=512, help="rows per decode batch on the wide side")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side (best is reported)")
    args = ap.parse_args()

    from pydoc_data.topics import topics

    import torch

    from frontload.corpus.tokenizer import train_tokenizer_from_texts
    from frontload.synth.sources import write_eval_tasks
    from frontload.train.evaluate import EvalConfig, TaskSpec, evaluate_task
    from frontload.train.model import ModelConfig
    from frontload.train.runtime import init_distributed

    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer_from_texts([topics[k] for k in sorted(topics)], Path(tmp) / "tok", vocab_size=512)
        task = write_eval_tasks(
            Path(tmp) / "task.jsonl", families=["arithmetic"], n=args.questions, seed=1, difficulty=1
        )
        init_distributed(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ModelConfig(
                layers=args.layers, hidden=args.hidden, heads=2, seq_len=256, vocab_size=tok.vocab_size
            ).build()
        torch.set_num_threads(1)  # set last: building the model resets it
        spec = TaskSpec(path=str(task))

        def run(batch: int, teacher_forced: bool = False, samples: int | None = None):
            cfg = EvalConfig(
                samples=samples or args.samples,
                temperature=1.0,
                max_new_tokens=1 if samples == 1 else args.new,
                batch_size=batch,
                progress=False,
                teacher_forced=teacher_forced,
            )
            return [(r.metric, r.k, r.value) for r in evaluate_task(model, tok, spec, cfg)]

        t_base, base = _best(lambda: run(args.samples), args.repeats)
        t_wide, wide = _best(lambda: run(args.batch), args.repeats)
        # Teacher-forced metrics alone: one sample of one token, with and without them.
        t_one, _ = _best(lambda: run(args.batch, samples=1), args.repeats)
        t_tf, _ = _best(lambda: run(args.batch, teacher_forced=True, samples=1), args.repeats)
    rows = args.questions * args.samples
    print(
        f"model: {args.layers} layers, hidden {args.hidden}; {args.questions} questions x {args.samples} samples, "
        f"<= {args.new} new tokens, torch threads {torch.get_num_threads()}"
    )
    print(f"batch {args.samples:4d} (one question per batch): {t_base:6.2f} s  [baseline]")
    print(f"batch {args.batch:4d} ({args.batch // args.samples} questions per batch): {t_wide:6.2f} s")
    print(f"ratio: {t_base / t_wide:.2f}x; same scores: {base == wide}; {rows} samples")
    print(f"teacher-forced answer_nll + solution_nll for {args.questions} questions: {max(0.0, t_tf - t_one):.2f} s")


if __name__ == "__main__":
    main()
