"""Benchmark of the filter pipeline: documents/s end to end, next to datatrove's stock steps on the same data.

Workload: ``--docs`` synthetic rollout records (:mod:`frontload.filters.synthetic`: word problems, ~60-word
traces, 2 rollouts per problem, ~15% wrong/unclosed/truncated), written as 2 JSONL shards, run with
2 datatrove tasks in one process (``--workers`` for more). Measured in the same run:

- baseline A, datatrove I/O floor: ``JsonlReader -> JsonlWriter``;
- baseline B, datatrove stock dedup: reader, the four MinHash stages, writer (what a datatrove user
  would run without frontload);
- frontload ``run_filters`` with exact + MinHash dedup on problems and traces and 13-gram decontamination
  against a 500-question eval file: verify, quality scores, pass rate, rule, decontamination, dedup,
  rejects and the account;
- math-verify calls/s: ``verify_answer`` serially, in 2 threads, and in a 2-process pool, on distinct
  answers (fractions vs LaTeX, ``x = n``, percentages, decimals vs fractions; one in five two integers).

The ratio frontload / stock-dedup time is the overhead frontload adds. Default 20k documents runs in
a couple of minutes on two cores; ``--full`` is the issue's 100k.

    .venv/bin/python benchmarks/filters.py            # 20k documents
    .venv/bin/python benchmarks/filters.py --full     # 100k documents
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path


def _quiet() -> None:
    from loguru import logger

    logger.remove()  # datatrove logs every task to stderr; the timings are what matters here
    logging.getLogger("math_verify").setLevel(logging.ERROR)


WORKERS = 1  # set from --workers; every pipeline here runs with the same number of processes


def _exec(pipeline, tasks: int, logs: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor

    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(WORKERS, tasks), logging_dir=str(logs)).run()


def stock_io(src: Path, work: Path, tasks: int) -> None:
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    _exec([JsonlReader(str(src / "data")), JsonlWriter(str(work / "out"), compression=None)], tasks, work / "logs")


def stock_minhash(src: Path, work: Path, tasks: int) -> None:
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from frontload.filters.scores import RegexWordTokenizer

    mh = MinhashConfig()
    read = lambda: JsonlReader(str(src / "data"))  # noqa: E731
    sig = MinhashDedupSignature(str(work / "sigs"), config=mh, language=RegexWordTokenizer())
    _exec([read(), sig], tasks, work / "l1")
    _exec([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)], mh.num_buckets, work / "l2")
    _exec([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh)], 1, work / "l3")
    final = [read(), MinhashDedupFilter(str(work / "remove")), JsonlWriter(str(work / "out"), compression=None)]
    _exec(final, tasks, work / "l4")


def frontload_filters(src: Path, work: Path, tasks: int, eval_file: Path):
    from frontload.filters.pipeline import FilterConfig, run_filters

    config = FilterConfig(dedup=["exact", "minhash"], decontaminate=[f"heldout={eval_file}"], ngram=13)
    return run_filters(src, work / "out", config, tasks=tasks, workers=WORKERS)


def _warm() -> None:
    from frontload.filters.verify import verify_answer

    verify_answer("1/2", "0.5")


def verify_rates(n: int) -> dict[str, float]:
    """math-verify calls/s on a mix of fractions, decimals, percentages, equations and LaTeX."""
    from frontload.filters.scores import _verify_batch
    from frontload.filters.verify import _verify, verify_answer

    rng = random.Random(0)
    cases = []
    for i in range(n):
        # Distinct numbers per call, so verify_answer's cache never answers for math-verify.
        a, b = 1000 + i, rng.randint(1, 999)
        kind = i % 5
        if kind == 0:
            cases.append((f"{a}/{b}", f"\\frac{{{a}}}{{{b}}}"))
        elif kind == 1:
            cases.append((str(a + b), f"x = {a + b}"))
        elif kind == 2:
            cases.append((f"{a}%", str(a / 100)))
        elif kind == 3:
            cases.append((f"{a}.5", f"{2 * a + 1}/2"))
        else:
            cases.append((str(a * b), str(a * b + 1)))  # two integers: the fast path, no math-verify
    verify_answer("1", "1")  # imports and sympy caches warm before timing
    rates = {}
    t = time.perf_counter()
    for g, p in cases:
        verify_answer(g, p)
    rates["serial"] = n / (time.perf_counter() - t)
    _verify.cache_clear()
    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(lambda c: verify_answer(*c), cases))
        rates["2 threads"] = n / (time.perf_counter() - t)
    _verify.cache_clear()  # forked workers would inherit it
    with ProcessPoolExecutor(2, initializer=_warm) as pool:
        list(pool.map(time.sleep, [0.5, 0.5]))  # both workers started and warm before timing
        chunks = [[(g, p, "math") for g, p in cases[i : i + 200]] for i in range(0, n, 200)]
        t = time.perf_counter()
        list(pool.map(_verify_batch, chunks))
        rates["2 processes"] = n / (time.perf_counter() - t)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000, help="synthetic rollout records to filter")
    parser.add_argument("--full", action="store_true", help="the issue's size: 100k records")
    parser.add_argument("--tasks", type=int, default=2, help="datatrove tasks (input shards)")
    parser.add_argument("--workers", type=int, default=1, help="datatrove worker processes for every pipeline")
    parser.add_argument("--verify-calls", type=int, default=2000, help="verify_answer calls per rate")
    args = parser.parse_args()
    n = 100_000 if args.full else args.docs
    global WORKERS
    WORKERS = args.workers
    _quiet()
    from frontload.filters.synthetic import make_records, write_traces

    root = Path(tempfile.mkdtemp(prefix="frontload-bench-filters-"))
    try:
        src = write_traces(root / "traces", make_records(n // 2, rollouts=2, seed=0, faults=True), shards=2)
        eval_file = root / "heldout.jsonl"
        eval_rows = make_records(500, rollouts=1, seed=99)
        eval_file.write_text("".join(json.dumps({"question": r["metadata"]["problem"]}) + "\n" for r in eval_rows))
        times = {}
        for name, fn in (
            ("datatrove read+write", lambda w: stock_io(src, w, args.tasks)),
            ("datatrove MinHash dedup", lambda w: stock_minhash(src, w, args.tasks)),
            ("frontload filters", lambda w: frontload_filters(src, w, args.tasks, eval_file)),
        ):
            work = root / name.replace(" ", "_")
            t = time.perf_counter()
            result = fn(work)
            times[name] = time.perf_counter() - t
            print(f"{name:<26} {times[name]:8.1f} s  {n / times[name]:10,.0f} docs/s", flush=True)
        acc = result.account
        print(f"frontload account: in={acc.inputs} kept={acc.kept} dropped={dict(sorted(acc.dropped.items()))}")
        base = times["datatrove MinHash dedup"]
        print(
            f"overhead: frontload filters take {times['frontload filters'] / base:.2f}x the time of stock MinHash dedup"
        )
        for mode, rate in verify_rates(args.verify_calls).items():
            print(f"verify_answer {mode:<12} {rate:10,.0f} calls/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
