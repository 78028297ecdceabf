"""Load a workspace's run folders, manifests, mix plans and checkpoints into its DuckDB store.

Invariants:

- Idempotent: ingesting twice adds nothing. Small files (study.json, config.json, manifests, plans,
  checkpoint meta.json) are re-read every time and replace their tables in one transaction; event
  files are append-only and read from the byte offset recorded in ``ingest_files``.
- Incremental: only bytes after that offset are parsed, in one transaction with the new offset
  (a big file alone; small files of one kind many per statement), so a crash mid-ingest loses
  nothing and duplicates nothing. A file that grows while it is read is re-read from a copy of
  exactly the bytes planned.
- A half-written last line (a writer killed mid-line, or still writing) is not consumed: the file
  is read up to its last newline and the rest is reported; the next ingest continues there.
- Unknown schema versions (``v`` of an event, ``schema_version`` of a config.json or manifest) are
  errors naming the file; everything else in the workspace is still ingested first.
- Parsing is DuckDB's own ``read_ndjson`` with a typed column list (schema columns plus any extra
  keys as JSON), a few hundred thousand rows per CPU-second, and odd extra fields never break it.

The small files are read by :mod:`frontload.analysis.ingest_files`, the event files loaded by
:mod:`frontload.analysis.ingest_events`; this module runs both against the store.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from frontload.analysis import stats
from frontload.analysis.ingest_events import EventLoader
from frontload.analysis.ingest_files import (
    Paths,
    Scan,
    insert_rows,
    scan,
    small_tables,
    study_bootstrap,
    study_seed,
)
from frontload.analysis.schema import SCHEMA_VERSION, TABLE_BY_NAME, TABLES
from frontload.analysis.store import DB_NAME, StoreError, open_writable, writer_lock
from frontload.analysis.views import PHASES_SQL, QUESTION_SCORES_SQL, create_views
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import fingerprint
from frontload.core.phases import PHASES


class IngestError(FrontloadError):
    """Some files could not be ingested (unknown schema version, unreadable); names every file."""


@dataclass
class IngestReport:
    """What one ingest did: rows added per table, files read, and warnings worth a look."""

    workspace: Path
    db_path: Path
    new_rows: dict[str, int] = field(default_factory=dict)
    event_files: int = 0
    event_files_read: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_new_rows(self) -> int:
        """Rows added by this ingest over all tables."""
        return sum(self.new_rows.values())

    def summary(self) -> str:
        """A few human lines for the command line."""
        added = ", ".join(f"{k} +{v}" for k, v in self.new_rows.items() if v) or "nothing new"
        lines = [
            f"ingested {self.workspace} -> {self.db_path} in {self.seconds:.2f}s: {added} "
            f"({self.event_files_read}/{self.event_files} event files had new lines)"
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def ingest(
    workspace: str | os.PathLike,
    *,
    rebuild: bool = False,
    progress: bool = True,
    resamples: int | None = None,
    bootstrap_seed: int | None = None,
) -> IngestReport:
    """Load everything new in ``workspace`` into ``workspace/frontload.duckdb``; returns what was added.

    The intervals (``score_intervals``, ``gain_intervals``) are recomputed when anything changed or the
    bootstrap settings differ from the stored ones: ``resamples`` and ``bootstrap_seed`` given here, else
    study.json's ``analysis`` table (``resamples``, ``bootstrap_seed``), else 2000 and 0.
    """
    started = time.perf_counter()
    ws = Path(workspace)
    if not ws.is_dir():
        raise StoreError(f"{ws}: no such workspace folder")
    db_path = ws / DB_NAME
    with writer_lock(db_path):
        if rebuild:
            for p in (db_path, db_path.with_name(db_path.name + ".wal")):
                p.unlink(missing_ok=True)
        report = IngestReport(workspace=ws, db_path=db_path)
        errors = _ingest_locked(ws, db_path, report, progress, (resamples, bootstrap_seed))
    report.seconds = time.perf_counter() - started
    if errors:
        more = f" (and {len(errors) - 1} more: {'; '.join(errors[1:4])})" if len(errors) > 1 else ""
        raise IngestError(f"{errors[0]}{more}; everything else was ingested into {db_path}")
    return report


def _ingest_locked(
    ws: Path, db_path: Path, report: IngestReport, progress: bool, bootstrap: tuple[int | None, int | None]
) -> list[str]:
    errors: list[str] = []
    paths = Paths(ws)
    found = scan(ws, errors)
    con = open_writable(db_path)
    try:
        _prepare(con, db_path)
        tables = small_tables(ws, paths, found, errors)
        # The small files are re-read every time; when nothing in them changed, their tables stay as they are.
        # The interval method's version is part of it: a store made by an older method is recomputed.
        small_fp = fingerprint({"tables": tables, "intervals": stats.METHOD_VERSION})
        stored = con.execute("SELECT any_value(inputs_fingerprint) FROM store_info").fetchone()[0]
        changed = stored != small_fp
        if changed:
            con.execute("BEGIN TRANSACTION")
            for name, rows in tables.items():
                before = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                con.execute(f"DELETE FROM {name}")
                insert_rows(con, TABLE_BY_NAME[name], rows)
                report.new_rows[name] = len(rows) - before
            con.execute("COMMIT")

        run_ids = {folder: info["run_id"] for folder, info in found.runs}
        report.event_files = len(found.events)
        loader = EventLoader(con, ws, paths, report, study_seed(found, []))
        try:
            loader.load_all(found.events, run_ids, progress)
            errors += loader.version_errors
        finally:
            loader.close()

        settings = _bootstrap_settings(found, *bootstrap, errors)
        before = con.execute("SELECT any_value(resamples), any_value(bootstrap_seed) FROM store_info").fetchone()
        con.execute("BEGIN TRANSACTION")
        if changed or loader.changed:
            con.execute("DELETE FROM phases")
            con.execute(PHASES_SQL)
        if changed or loader.changed or tuple(before) != settings:
            _intervals(con, *settings)
        con.execute("DELETE FROM store_info")
        con.execute(
            "INSERT INTO store_info VALUES (?, ?, ?, ?, ?, ?)",
            [SCHEMA_VERSION, str(ws.resolve()), time.time(), small_fp, *settings],
        )
        con.execute("COMMIT")
        if changed or loader.changed:
            con.execute("CHECKPOINT")
    finally:
        con.close()
    return errors


def _bootstrap_settings(found: Scan, resamples: int | None, seed: int | None, errors: list[str]) -> tuple[int, int]:
    from_study = study_bootstrap(found)
    resamples = resamples if resamples is not None else from_study[0]
    seed = seed if seed is not None else from_study[1]
    resamples = stats.RESAMPLES if resamples is None else resamples
    if resamples < 1:
        errors.append(f"bootstrap resamples must be >= 1, got {resamples}")
        resamples = stats.RESAMPLES
    return resamples, stats.BOOTSTRAP_SEED if seed is None else seed


def _intervals(con, resamples: int, seed: int) -> None:
    """Fill score_intervals and gain_intervals from the per-question scores (hierarchical bootstrap)."""
    scores: dict[tuple[str, str, str, str], dict[int, dict[str, float]]] = {}
    for arm, s, phase, task, metric, qid, value in con.execute(QUESTION_SCORES_SQL).fetchall():
        scores.setdefault((arm, phase, task, metric), {}).setdefault(s, {})[qid] = value
    baseline = con.execute("SELECT arm FROM arms WHERE is_baseline ORDER BY arm_order LIMIT 1").fetchone()
    baseline = baseline[0] if baseline else None
    score_rows, gains = [], {}
    for (arm, phase, task, metric), by_seed in sorted(scores.items()):
        iv = stats.bootstrap({k: list(v.values()) for k, v in by_seed.items()}, resamples=resamples, seed=seed)
        if iv is not None:
            score_rows.append((arm, phase, task, metric, iv.mean, iv.low, iv.high, iv.se, iv.n_seeds, iv.n_questions))
        base = scores.get((baseline, phase, task, metric))
        if arm != baseline and base is not None:
            paired = stats.paired_gains(by_seed, base, metric)
            gain = stats.bootstrap(paired, resamples=resamples, seed=seed)
            if gain is not None:
                gains.setdefault((arm, task, metric), {})[phase] = gain
    order = {p: i for i, p in enumerate(PHASES)}
    gain_rows = []
    for (arm, task, metric), by_phase in sorted(gains.items()):
        phases = sorted(by_phase, key=lambda p: (order.get(p, len(order)), p))
        verdict = stats.verdict([by_phase[p] for p in phases])
        for p in phases:
            g = by_phase[p]
            gain_rows.append(
                (arm, baseline, p, task, metric, g.mean, g.low, g.high, g.se, g.n_seeds, g.n_questions, verdict)
            )
    for name, rows in (("score_intervals", score_rows), ("gain_intervals", gain_rows)):
        table = TABLE_BY_NAME[name]
        con.execute(f"DELETE FROM {name}")
        insert_rows(con, table, [dict(zip((c.name for c in table.columns), row)) for row in rows])


def _prepare(con, db_path: Path) -> None:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'store_info' AND table_schema = 'main'"
    ).fetchone()[0]
    if exists:
        have = [r[0] for r in con.execute("DESCRIBE store_info").fetchall()]
        want = [c.name for c in TABLE_BY_NAME["store_info"].columns]
        row = con.execute("SELECT schema_version FROM store_info").fetchone() if "schema_version" in have else (None,)
        if have != want or (row is not None and row[0] != SCHEMA_VERSION):
            why = (
                "its tables differ from this version's"
                if row is not None and row[0] == SCHEMA_VERSION
                else f"store schema {row[0] if row else None}, this one writes {SCHEMA_VERSION}"
            )
            raise StoreError(
                f"{db_path}: made by another frontload version ({why}); "
                "rebuild it with `frontload analysis ingest WORKSPACE --rebuild`"
            )
    for t in TABLES:
        con.execute(t.ddl())
    create_views(con)
