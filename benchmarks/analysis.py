"""Benchmark of the analysis store: metric-event ingest rate and the latency of the named views.

Workload: a study workspace of 3 arms x 3 phases whose run folders hold ``--rows`` metric events in
total (realistic lines of ~300 bytes, written by DuckDB for speed), plus eval events. Measured:

- ingest: ``frontload analysis ingest`` of the whole workspace (rows/s of metric events), against a
  baseline measured in the same run: the obvious loader, ``read_events`` (json.loads per line) into
  a polars frame appended to DuckDB, on one file of the same workspace; and against a ceiling:
  DuckDB's own ``read_ndjson`` of all files into one table with no bookkeeping at all. Rates are
  given per wall second and per CPU-second (all threads), since the machine may be shared;
- re-ingest with nothing new, and an incremental ingest after 1% more rows are appended;
- the ``ablation``, ``persistence`` and ``data_mix`` views and the report's loss-curve query over all
  metric rows (median of 5 queries on an open read-only connection);
- many small files (``--small-runs`` eval run folders with two event files each): the batched
  ingest against the same ingest forced to one file per statement and transaction.

Targets (issue 9): ingest >= 1M rows/s, views < 1 s. Default size runs in about a minute on two
cores; ``--full`` is the issue's 5M-row size.

    .venv/bin/python benchmarks/analysis.py            # 1M metric rows
    .venv/bin/python benchmarks/analysis.py --full     # 5M metric rows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ARMS = ("baseline", "front_loaded", "front_loaded_more")
PHASES = ("pretrain", "sft", "rl")
TASKS = ("heldout_arithmetic", "heldout_word_problems")


def _metrics_sql(n: int, run_id: str, phase: str, seq0: int = 0) -> str:
    rl = phase == "rl"
    reward = ", 0.3 + 0.4 * random() AS reward_mean, 0.1 AS reward_std, 0.5 AS accuracy, 0.01 AS kl" if rl else ""
    return f"""
        SELECT 1 AS v, '{run_id}' AS run_id, 1.7e9 + i AS t, {seq0} + i AS seq, '{phase}' AS phase,
               {seq0} + i + 1 AS step, 6.0 * exp(-({seq0} + i) / 1e5) + random() * 0.1 AS loss,
               3e-4 AS lr, random() AS grad_norm, 52345.5 AS tokens_per_s, ({seq0} + i) * 32 AS consumed_samples,
               {{'web': ({seq0} + i) * 24, 'reasoning_diverse': ({seq0} + i) * 8}} AS consumed_by_source,
               ({seq0} + i) * 32 AS sample_start {reward}
        FROM range({n}) r(i)"""


def make_workspace(ws: Path, rows: int) -> list[Path]:
    """Write the benchmark workspace; returns the metric files."""
    import duckdb

    from frontload.core.events import RunFolder
    from frontload.core.fingerprint import atomic_write_json

    atomic_write_json(ws / "study.json", {"name": "bench", "arms": [{"name": a} for a in ARMS], "baseline": ARMS[0]})
    con = duckdb.connect()
    files = []
    per_run = rows // (len(ARMS) * len(PHASES))
    for a, arm in enumerate(ARMS):
        parent = None
        for phase in PHASES:
            run_dir = ws / "runs" / arm / phase / f"{arm}-{phase}"
            with RunFolder(run_dir, stage=phase, config={"phase": phase}, arm=arm, phase=phase, parent=parent) as run:
                path = run_dir / "events" / "metrics.rank0.jsonl"
                con.execute(f"COPY ({_metrics_sql(per_run, run.run_id, phase)}) TO '{path}' (FORMAT json)")
                files.append(path)
                ck = run_dir / "checkpoints" / f"{per_run:07d}"
                atomic_write_json(ck / "meta.json", {"phase": phase, "step": per_run, "parent": parent})
                for t, task in enumerate(TASKS):
                    run.log(
                        "evals",
                        phase=phase,
                        checkpoint=str(ck),
                        step=per_run,
                        task=task,
                        metric="pass@1",
                        value=0.1 * (1 + PHASES.index(phase)) + 0.03 * a + 0.01 * t,
                        n_questions=500,
                        n_samples=4,
                    )
                parent = str(ck)
    con.close()
    return files


def make_many_small(ws: Path, runs: int) -> int:
    """Eval run folders with one evals and one predictions file each (20 questions); returns events."""
    from frontload.core.events import RunFolder

    for i in range(runs):
        with RunFolder(ws / "runs" / ARMS[i % 3] / "eval-rl" / f"e{i:05d}", stage="eval", config={}) as run:
            for q in range(20):
                run.log(
                    "predictions",
                    phase="rl",
                    checkpoint="c",
                    task="t",
                    question_id=q,
                    question="q",
                    gold="4",
                    sample=0,
                    completion="\\boxed{4}",
                    prediction="4",
                    verdict="correct",
                    correct=True,
                )
            run.log("evals", phase="rl", checkpoint="c", step=1, task="t", metric="pass@1", value=1.0)
    return runs * 21


def many_small_files(root: Path, runs: int) -> None:
    """Many small event files: batched ingest against one file per statement and transaction."""
    import importlib

    from frontload.analysis import ingest

    module = importlib.import_module("frontload.analysis.ingest")
    events = make_many_small(root / "many", runs)
    times = {}
    for label, batch_bytes in (("one file per transaction", 0), ("batched (default)", module._BATCH_BYTES)):
        saved, module._BATCH_BYTES = module._BATCH_BYTES, batch_bytes
        try:
            t0 = time.perf_counter()
            result = ingest(root / "many", progress=False, rebuild=True)
            times[label] = time.perf_counter() - t0
        finally:
            module._BATCH_BYTES = saved
        assert result.new_rows["predictions"] + result.new_rows["evals"] == events
        print(f"small     {2 * runs} files, {events:,} events, {label:<25} {times[label]:.2f}s")
    base, ours = times["one file per transaction"], times["batched (default)"]
    print(f"small     batched ingest is {base / ours:.1f}x faster than one file per transaction")


def baseline_load(path: Path, db: Path) -> tuple[int, float, float]:
    """The obvious loader: json.loads per line (the contract's read_events), a polars frame, one insert."""
    import duckdb
    import polars as pl

    from frontload.core.events import read_events

    t0 = time.perf_counter()
    c0 = time.process_time()
    records, _ = read_events(path)
    frame = pl.DataFrame(records)
    con = duckdb.connect(str(db))
    con.register("frame", frame.to_arrow())
    con.execute("CREATE TABLE metrics AS SELECT * FROM frame")
    con.close()
    return len(records), time.perf_counter() - t0, time.process_time() - c0


def ceiling_load(files: list[Path], db: Path) -> tuple[float, float]:
    """What DuckDB alone costs: every file in one auto-detected read, no bookkeeping, then a checkpoint."""
    import duckdb

    t0, c0 = time.perf_counter(), time.process_time()
    con = duckdb.connect(str(db))
    listing = ", ".join(f"'{f}'" for f in files)
    con.execute(f"CREATE TABLE metrics AS SELECT * FROM read_ndjson([{listing}], union_by_name = true)")
    con.execute("CHECKPOINT")
    con.close()
    return time.perf_counter() - t0, time.process_time() - c0


def _median_latency(con, sql: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="metric events in the workspace (default 1M)")
    parser.add_argument("--full", action="store_true", help="the issue's size: 5M metric events")
    parser.add_argument("--workdir", type=Path, help="where to build the workspace (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workspace afterwards")
    parser.add_argument(
        "--small-runs", type=int, default=500, help="eval run folders in the many-small-files workload"
    )
    args = parser.parse_args(argv)
    rows = 5_000_000 if args.full else args.rows

    from frontload.analysis import connect, ingest

    root = Path(tempfile.mkdtemp(prefix="frontload-bench-", dir=args.workdir))
    try:
        ws = root / "ws"
        t0 = time.perf_counter()
        files = make_workspace(ws, rows)
        total = (rows // (len(ARMS) * len(PHASES))) * len(files)
        size = sum(f.stat().st_size for f in files)
        print(
            f"workspace: {total:,} metric events in {len(files)} files ({size / 1e6:.0f} MB), "
            f"written in {time.perf_counter() - t0:.1f}s"
        )

        print(f"load average before measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
        base_rows, base_s, base_cpu = baseline_load(files[0], root / "baseline.duckdb")
        base_rate, base_cpu_rate = base_rows / base_s, base_rows / base_cpu
        print(
            f"baseline  read_events + polars + DuckDB insert: {base_rows:,} rows in {base_s:.2f}s = "
            f"{base_rate:,.0f} rows/s ({base_cpu_rate:,.0f} rows per CPU-second)"
        )

        ceil_s, ceil_cpu = ceiling_load(files, root / "ceiling.duckdb")
        print(
            f"ceiling   DuckDB read_ndjson CREATE TABLE AS:   {total:,} rows in {ceil_s:.2f}s = {total / ceil_s:,.0f} rows/s "
            f"({total / ceil_cpu:,.0f} rows per CPU-second)"
        )

        t0, c0 = time.perf_counter(), time.process_time()
        first = ingest(ws, progress=False)
        ingest_s, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert first.new_rows["metrics"] == total, first.new_rows
        rate, cpu_rate = total / ingest_s, total / ingest_cpu
        print(
            f"ingest    frontload analysis ingest:           {total:,} rows in {ingest_s:.2f}s = {rate:,.0f} rows/s "
            f"({cpu_rate:,.0f} rows per CPU-second); {rate / base_rate:.1f}x baseline wall, "
            f"{cpu_rate / base_cpu_rate:.1f}x per CPU-second; {ingest_cpu / ceil_cpu:.2f}x the ceiling's CPU; "
            "target >= 1,000,000 rows/s"
        )

        t0 = time.perf_counter()
        again = ingest(ws, progress=False)
        assert again.total_new_rows == 0
        print(f"re-ingest nothing new:                          {time.perf_counter() - t0:.2f}s")

        import duckdb

        extra = max(1, total // 100)
        con = duckdb.connect()
        path = files[0]
        run_id = json.loads((path.parent.parent / "config.json").read_text())["run_id"]
        tmp = root / "append.jsonl"
        con.execute(f"COPY ({_metrics_sql(extra, run_id, 'pretrain', seq0=10**9)}) TO '{tmp}' (FORMAT json)")
        con.close()
        with open(path, "ab") as out:
            out.write(tmp.read_bytes())
        t0 = time.perf_counter()
        inc = ingest(ws, progress=False)
        inc_s = time.perf_counter() - t0
        assert inc.new_rows["metrics"] == extra
        print(f"increment +{extra:,} rows appended to one file:    {inc_s:.2f}s")

        con = connect(ws)
        for view in ("ablation", "persistence", "data_mix"):
            lat = _median_latency(con, f"SELECT * FROM {view}")
            print(f"view      {view:<12} median of 5: {lat * 1000:8.1f} ms (target < 1000 ms)")
        from frontload.analysis.report import _CURVES_SQL, MAX_POINTS

        curves = _CURVES_SQL.format(col="loss", points=MAX_POINTS, extra="", extra_agg="")
        lat = _median_latency(con, curves)
        con.close()
        print(f"query     loss curves over all metric rows (report), median of 5: {lat * 1000:.1f} ms")
        many_small_files(root, args.small_runs)
        if args.keep:
            print(f"kept {root}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
