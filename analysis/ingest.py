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
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontload.analysis.schema import EVENT_TABLES, SCHEMA_VERSION, TABLE_BY_NAME, TABLES, Table
from frontload.analysis.store import DB_NAME, StoreError, open_writable
from frontload.analysis.views import PHASES_SQL, create_views
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import fingerprint
from frontload.core.workspace import STUDY_FILE, parse_mix_plan, parse_run
from frontload.core.workspace import data_name as _data_name

KNOWN_EVENT_VERSIONS = (1,)
KNOWN_FILE_VERSIONS = (1,)
KNOWN_PLAN_VERSIONS = (1,)
_EVENT_FILE = re.compile(r"^(?P<kind>[A-Za-z0-9_]+)\.rank(?P<rank>\d+)\.jsonl$")
# Folders that never hold anything the store reads (documents, weights' tokenizer copies, reports).
_PRUNE = {"data", "rejects", "tokenizer", "__pycache__", "report", "node_modules"}
_CHUNK = 1 << 24
_SAMPLE = 1024  # lines sampled per big file to find keys the schema does not name
_BATCH_BYTES = 4 << 20  # files with at most this many new bytes are loaded many per statement
_BATCH_FILES = 256
_SRC_COLUMN = "frontload_source_file"
_VERSION_MARK = "frontload: unknown event version "
_POLARS_TYPES = {"VARCHAR": "String", "JSON": "String", "BIGINT": "Int64", "INTEGER": "Int64", "DOUBLE": "Float64"}


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


@dataclass
class _Scan:
    study: Path | None = None
    runs: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    manifests: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    plans: list[tuple[Path, Path | None]] = field(default_factory=list)  # (plan, run folder)
    metas: list[tuple[Path, Path | None]] = field(default_factory=list)  # (meta.json, run folder)
    events: list[tuple[Path, Path]] = field(default_factory=list)  # (file, run folder)


class _Paths:
    """Turns the paths stages wrote (absolute, relative to the cwd, or to the workspace) into workspace-relative ones."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        prefixes = {str(ws.absolute()), str(ws.resolve())}
        if not Path(str(ws)).is_absolute():
            prefixes.add(os.path.normpath(str(ws)))
        self.prefixes = sorted((p.rstrip("/") + "/" for p in prefixes if p not in (".", "")), key=len, reverse=True)

    def rel(self, p: Path) -> str:
        return p.relative_to(self.ws).as_posix()

    def norm(self, value: Any) -> str | None:
        if value is None:
            return None
        s = re.sub(r"^(\./)+", "", str(value)).rstrip("/")
        for prefix in self.prefixes:
            if s.startswith(prefix):
                return s[len(prefix) :]
        return s

    def norm_sql(self, col: str) -> str:
        """The same as :meth:`norm`, as a SQL expression over ``col`` (longest prefix first)."""
        x = f"regexp_replace(regexp_replace({col}, '^(\\./)+', ''), '/+$', '')"
        whens = " ".join(
            f"WHEN starts_with({x}, '{p.replace(chr(39), chr(39) * 2)}') THEN substr({x}, {len(p) + 1})"
            for p in self.prefixes
        )
        return f"(CASE {whens} ELSE {x} END)" if whens else x


def _read_json(path: Path, errors: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        errors.append(f"{path}: not readable JSON ({e})")
        return None
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a JSON object")
        return None
    return data


def _check_version(path: Path, data: dict[str, Any], errors: list[str], required: bool) -> bool:
    version = data.get("schema_version")
    if version is None and not required:
        return True
    if version not in KNOWN_FILE_VERSIONS:
        errors.append(f"{path}: unknown schema_version {version!r} (this frontload reads {list(KNOWN_FILE_VERSIONS)})")
        return False
    return True


def _scan(ws: Path, errors: list[str]) -> _Scan:
    found = _Scan()
    if (ws / STUDY_FILE).is_file():
        found.study = ws / STUDY_FILE
    run_dirs: list[Path] = []
    for root, dirs, files in os.walk(ws):
        here = Path(root)
        while run_dirs and run_dirs[-1] not in here.parents and run_dirs[-1] != here:
            run_dirs.pop()
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _PRUNE and d != "events")
        if "meta.json" in files and here.parent.name == "checkpoints":
            found.metas.append((here / "meta.json", run_dirs[-1] if run_dirs else None))
            dirs[:] = []  # weights and optimizer state below
            continue
        if "config.json" in files:
            info = _read_json(here / "config.json", errors)
            # Only run folders count: an exported Hugging Face model also has a config.json.
            if info is not None and "run_id" in info and "stage" in info:
                if _check_version(here / "config.json", info, errors, required=True):
                    found.runs.append((here, info))
                run_dirs.append(here)
        if "manifest.json" in files:
            manifest = _read_json(here / "manifest.json", errors)
            if (
                manifest is not None
                and manifest.get("kind") in ("corpus", "shards")
                and _check_version(here / "manifest.json", manifest, errors, required=True)
            ):
                found.manifests.append((here, manifest))
        for name in ("plan.json", "mix_plan.json"):
            if name in files:
                found.plans.append((here / name, run_dirs[-1] if run_dirs and run_dirs[-1] == here else None))
        if (here / "events").is_dir():
            owner = run_dirs[-1] if run_dirs and run_dirs[-1] == here else here
            for name in sorted(os.listdir(here / "events")):
                if name.endswith(".jsonl"):
                    found.events.append((here / "events" / name, owner))
    return found


def _insert_rows(con, table: Table, rows: list[dict[str, Any]]) -> None:
    import polars as pl

    if not rows:
        return
    schema = {c.name: getattr(pl, _POLARS_TYPES.get(c.type, "Boolean")) for c in table.columns}
    for c in table.columns:
        if c.type == "JSON":
            for r in rows:
                if r.get(c.name) is not None:
                    r[c.name] = json.dumps(r[c.name], ensure_ascii=False, default=str)
    frame = pl.DataFrame([{c.name: r.get(c.name) for c in table.columns} for r in rows], schema=schema, orient="row")
    con.register("_frontload_rows", frame.to_arrow())
    try:
        con.execute(f"INSERT INTO {table.name} SELECT * FROM _frontload_rows")
    finally:
        con.unregister("_frontload_rows")


def _as_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _study_rows(scan: _Scan, errors: list[str]) -> tuple[list[dict], list[dict]]:
    study = _read_json(scan.study, errors) if scan.study else None
    arm_names: list[str] = []
    arm_cfgs: dict[str, dict] = {}
    if study is not None:
        _check_version(scan.study, study, errors, required=False)
        for i, arm in enumerate(study.get("arms") or []):
            if not isinstance(arm, dict) or not arm.get("name"):
                errors.append(f"{scan.study}: arms[{i}] has no name")
                continue
            arm_names.append(str(arm["name"]))
            arm_cfgs[str(arm["name"])] = arm
    # Arms that only run folders name (no study.json, or a run outside the study) still get a row.
    for _, info in sorted(scan.runs, key=lambda r: str(r[0])):
        arm = info.get("arm")
        if arm and arm not in arm_names:
            arm_names.append(str(arm))
    inner = (study or {}).get("study") if isinstance((study or {}).get("study"), dict) else {}
    baseline = (study or {}).get("baseline") or inner.get("baseline") or (arm_names[0] if arm_names else None)
    if baseline is not None and arm_names and baseline not in arm_names:
        errors.append(f"{scan.study}: baseline {baseline!r} is not an arm ({', '.join(arm_names)})")
    study_rows = []
    if study is not None or arm_names:
        study_rows = [{"name": (study or {}).get("name") or inner.get("name"), "baseline": baseline, "config": study}]
    arms = [
        {
            "arm": name,
            "arm_order": i,
            "is_baseline": name == baseline,
            "pretrain": arm_cfgs.get(name, {}).get("pretrain"),
            "sft": arm_cfgs.get(name, {}).get("sft"),
            "rl": arm_cfgs.get(name, {}).get("rl"),
            "config": arm_cfgs.get(name),
        }
        for i, name in enumerate(arm_names)
    ]
    return study_rows, arms


def _plan_rows(plan: dict[str, Any], rel: str, arm: str | None, phase: str | None, own_phase_only: bool) -> list[dict]:
    """Rows of one mix plan: ``MixPlan.to_dict()`` (phases -> stages -> sources) or a flat ``stages`` list."""
    if isinstance(plan.get("phases"), dict):
        phases = plan["phases"]
        if own_phase_only and phase in phases:
            # A training run's mix_plan.json holds the whole schedule; the run stands for its own phase.
            phases = {phase: phases[phase]}
        flat = [
            (name, p.get("fingerprint"), p.get("stages") or [], p.get("sources") or {}) for name, p in phases.items()
        ]
    else:
        flat = [(phase, plan.get("fingerprint"), plan.get("stages") or [], {})]
    rows = []
    for phase_name, phase_fp, stages, shard_infos in flat:
        for s, stage in enumerate(stages):
            sources = stage.get("sources") or []
            # MixPlan writes {name: SourcePlan}; a flat plan may write [{name, ...}].
            items = sources.items() if isinstance(sources, dict) else ((src.get("name"), src) for src in sources)
            for name, src in items:
                info = shard_infos.get(name) or {}
                rows.append(
                    {
                        "plan_fingerprint": phase_fp,
                        "mix_fingerprint": plan.get("fingerprint"),
                        "arm": arm,
                        "phase": phase_name,
                        "path": rel,
                        "stage_index": _as_int(stage.get("index", s)),
                        "budget": stage.get("budget", {k: stage[k] for k in ("samples", "tokens") if k in stage}),
                        "source": name,
                        "tokens": _as_int(src.get("tokens")),
                        "samples": _as_int(src.get("samples")),
                        "share": _as_float(src.get("share")),
                        "epochs": _as_float(src.get("epochs")),
                        "shards_fingerprint": info.get("fingerprint") or src.get("fingerprint"),
                        "source_info": src,
                        "plan": plan,
                    }
                )
    return rows


def _small_tables(ws: Path, paths: _Paths, scan: _Scan, errors: list[str]) -> dict[str, list[dict]]:
    tables: dict[str, list[dict]] = {}
    tables["study"], tables["arms"] = _study_rows(scan, errors)
    runs, run_by_dir = [], {}
    for folder, info in scan.runs:
        rel = paths.rel(folder)
        # The workspace layout names the arm where a stage's config does not.
        placed = parse_run(rel)
        path_arm = placed.arm if placed else None
        row = {
            "run_id": info["run_id"],
            "stage": info.get("stage"),
            "arm": info.get("arm") or path_arm,
            "phase": info.get("phase"),
            "parent": paths.norm(info.get("parent")),
            "path": rel,
            "created": _as_float(info.get("created")),
            "config": info.get("config"),
            "info": info,
        }
        run_by_dir[folder] = row
        runs.append(row)
    # Several folders with one run id (a resumed run copied elsewhere): keep the newest.
    dedup: dict[str, dict] = {}
    for row in sorted(runs, key=lambda r: (r["created"] or 0.0, r["path"])):
        dedup[row["run_id"]] = row
    tables["runs"] = list(dedup.values())

    ckpts = []
    for meta_path, run_dir in scan.metas:
        meta = _read_json(meta_path, errors)
        if meta is None or not _check_version(meta_path, meta, errors, required=False):
            continue
        run = run_by_dir.get(run_dir) if run_dir else None
        ckpts.append(
            {
                "path": paths.rel(meta_path.parent),
                "run_id": run["run_id"] if run else None,
                "arm": run["arm"] if run else meta.get("arm"),
                "phase": meta.get("phase") or (run["phase"] if run else None),
                "step": _as_int(meta.get("step")),
                "consumed_samples": _as_int(meta.get("consumed_samples")),
                "mix_plan_fingerprint": meta.get("mix_plan_fingerprint"),
                "parent": paths.norm(meta.get("parent")),
                "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
                "model": meta.get("model"),
                "meta": meta,
            }
        )
    tables["checkpoints"] = ckpts

    corpora, shards = [], []
    for folder, m in scan.manifests:
        rel = paths.rel(folder)
        name = _data_name(folder, m.get("fingerprint"))
        counts = m.get("counts") or {}
        if m["kind"] == "corpus":
            account = m.get("account") or {}
            corpora.append(
                {
                    "name": m.get("name") or name,
                    "fingerprint": m.get("fingerprint"),
                    "path": rel,
                    "documents": _as_int(counts.get("documents", account.get("kept"))),
                    "inputs": _as_int(account.get("in")),
                    "kept": _as_int(account.get("kept")),
                    "dropped": account.get("dropped"),
                    "counts": counts,
                    "config": m.get("config"),
                    "manifest": m,
                }
            )
        else:
            shards.append(
                {
                    "name": m.get("name") or name,
                    "fingerprint": m.get("fingerprint"),
                    "path": rel,
                    "input_fingerprint": m.get("input_fingerprint"),
                    "tokenizer_fingerprint": m.get("tokenizer_fingerprint"),
                    "sft": bool(m.get("sft", False)),
                    "documents": _as_int(counts.get("documents")),
                    "tokens": _as_int(counts.get("tokens")),
                    "dtype": None if m.get("dtype") is None else str(m.get("dtype")),
                    "vocab_size": _as_int(m.get("vocab_size")),
                    "manifest": m,
                }
            )
    tables["corpora"], tables["shards"] = corpora, shards

    plans = []
    for plan_path, run_dir in scan.plans:
        plan = _read_json(plan_path, errors)
        if plan is None or not _check_version(plan_path, plan, errors, required=False):
            continue
        version = plan.get("plan_version")
        if version is not None and version not in KNOWN_PLAN_VERSIONS:
            errors.append(
                f"{plan_path}: unknown plan_version {version!r} (this frontload reads {list(KNOWN_PLAN_VERSIONS)})"
            )
            continue
        run = run_by_dir.get(run_dir) if run_dir else None
        arm = phase = None
        if run is not None:
            arm, phase = run["arm"], run["phase"]
        elif (placed := parse_mix_plan(plan_path.relative_to(ws))) is not None:
            arm, phase = placed
        plans += _plan_rows(
            plan, paths.rel(plan_path), plan.get("arm") or arm, plan.get("phase") or phase, run is not None
        )
    tables["mix_plan"] = plans
    return tables


def _last_line_end(path: Path, offset: int, size: int) -> int:
    """Byte position just past the last newline in ``path[offset:size]`` (``offset`` if there is none)."""
    with open(path, "rb") as f:
        pos = size
        while pos > offset:
            start = max(offset, pos - (1 << 16))
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                return start + i + 1
            pos = start
    return offset


def _copy_slice(path: Path, start: int, end: int, dest: Path) -> None:
    with open(path, "rb") as src, open(dest, "wb") as out:
        src.seek(start)
        left = end - start
        while left > 0:
            block = src.read(min(_CHUNK, left))
            if not block:
                break
            out.write(block)
            left -= len(block)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, int | float):
        return repr(v)
    return _sql_str(str(v))


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


@dataclass
class _Item:
    """One event file with new complete lines (or a changed torn tail) to load."""

    path: Path
    rel: str
    kind: str
    table: Table
    rank: int
    run_id: str | None
    file_id: int
    start: int  # bytes already ingested
    end: int  # just past the last complete line now
    size: int
    lines: int  # lines ingested so far
    rows: int
    bad: int

    @property
    def in_place(self) -> bool:
        """Whether DuckDB may read the file itself (the new bytes are the whole file)."""
        return self.start == 0 and self.end == self.size


class _EventLoader:
    """Loads event files: big ones one per transaction, small ones many per statement (one per kind)."""

    def __init__(self, con, ws: Path, paths: _Paths, report: IngestReport) -> None:
        self.con, self.ws, self.paths, self.report = con, ws, paths, report
        self.state = {
            row[1]: row
            for row in con.execute(
                "SELECT file_id, path, bytes_ingested, lines, rows_added, bad_lines, partial_bytes FROM ingest_files"
            ).fetchall()
        }
        self.next_id = 1 + (con.execute("SELECT max(file_id) FROM ingest_files").fetchone()[0] or 0)
        self.changed = False  # whether any event table changed (then `phases` is rebuilt)
        self.version_errors: list[str] = []
        # Slices of event files are copied beside the workspace's data (same filesystem, no /tmp to fill);
        # a hidden folder, so a scan never reads it. Made last: close() removes it.
        self.tmp = Path(tempfile.mkdtemp(prefix=".frontload-ingest-", dir=ws))

    def close(self) -> None:
        for p in self.tmp.iterdir():
            p.unlink()
        self.tmp.rmdir()

    def load_all(self, events: list[tuple[Path, Path]], run_ids: dict[Path, str], progress: bool) -> None:
        """Load every event file with something new; version errors are collected in ``version_errors``."""
        from tqdm import tqdm

        items = [it for path, run_dir in events if (it := self._plan(path, run_ids.get(run_dir))) is not None]
        small = [it for it in items if it.end - it.start <= _BATCH_BYTES]
        big = [it for it in items if it.end - it.start > _BATCH_BYTES]
        batches = []
        for kind in EVENT_TABLES:
            group = [it for it in small if it.kind == kind]
            batches += [group[i : i + _BATCH_FILES] for i in range(0, len(group), _BATCH_FILES)]
        work = [[it] for it in big] + batches
        bar = tqdm(total=len(items), desc="ingest events", unit="file", disable=not progress or len(items) < 20)
        for batch in work:
            if len(batch) == 1 or not self._load_batch(batch):
                for it in batch:
                    self._load_one(it)
            bar.update(len(batch))
        bar.close()

    def _plan(self, path: Path, run_id: str | None) -> _Item | None:
        rel = self.paths.rel(path)
        m = _EVENT_FILE.match(path.name)
        if m is None or m["kind"] not in EVENT_TABLES:
            self.report.warnings.append(
                f"{rel}: not an event file of a known kind ({', '.join(EVENT_TABLES)}); skipped"
            )
            return None
        table = EVENT_TABLES[m["kind"]]
        size = path.stat().st_size
        prev = self.state.get(rel)
        if prev is None:
            file_id, offset, lines, rows, bad, partial = self.next_id, 0, 0, 0, 0, 0
            self.next_id += 1
        else:
            file_id, _, offset, lines, rows, bad, partial = prev
        if size < offset:
            # The file was replaced by a shorter one (a run folder rebuilt): its old rows go, all is re-read.
            self.report.warnings.append(f"{rel}: shorter than what was ingested before; re-reading it")
            self.con.execute(f"DELETE FROM {table.name} WHERE file_id = ?", [file_id])
            self.con.execute(
                "UPDATE ingest_files SET bytes_ingested = 0, lines = 0, rows_added = 0, bad_lines = 0 "
                "WHERE file_id = ?",
                [file_id],
            )
            self.changed = True
            self.report.new_rows[table.name] = self.report.new_rows.get(table.name, 0) - rows
            offset, lines, rows, bad = 0, 0, 0, 0
        end = _last_line_end(path, offset, size) if size > offset else offset
        if end == offset and prev is not None and size - end == partial:
            if partial:
                self._warn_partial(rel, partial, lines)
            return None  # nothing new at all: no write
        return _Item(path, rel, m["kind"], table, int(m["rank"]), run_id, file_id, offset, end, size, lines, rows, bad)

    def _warn_partial(self, rel: str, partial: int, lines: int) -> None:
        self.report.warnings.append(
            f"{rel}: {partial} bytes after the last complete line (a writer killed or still writing); "
            f"ingested up to line {lines}, the rest waits for the next ingest"
        )

    def _record(self, items: list[_Item], added: dict[int, int], bad: dict[int, int]) -> None:
        now = time.time()
        rows = []
        for it in items:
            a, b = added.get(it.file_id, 0), bad.get(it.file_id, 0)
            rows.append(
                (
                    it.file_id,
                    it.rel,
                    it.kind,
                    it.run_id,
                    it.rank,
                    it.end,
                    it.lines + a + b,
                    it.rows + a,
                    it.bad + b,
                    it.size - it.end,
                    now,
                )
            )
        ids = ", ".join(str(it.file_id) for it in items)
        self.con.execute(f"DELETE FROM ingest_files WHERE file_id IN ({ids})")
        # One statement: DuckDB's executemany costs about a millisecond per row.
        values = ", ".join("(" + ", ".join(_sql_literal(v) for v in row) + ")" for row in rows)
        self.con.execute(f"INSERT INTO ingest_files VALUES {values}")

    def _done(self, items: list[_Item], added: dict[int, int], bad: dict[int, int]) -> None:
        for it in items:
            a = added.get(it.file_id, 0)
            self.report.new_rows[it.table.name] = self.report.new_rows.get(it.table.name, 0) + a
            self.changed = self.changed or a > 0
            if it.end > it.start:
                self.report.event_files_read += 1
            if it.size > it.end:
                self._warn_partial(it.rel, it.size - it.end, it.lines + a + bad.get(it.file_id, 0))

    def _load_one(self, it: _Item) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            added = bad = 0
            if it.end > it.start:
                try:
                    added, bad = self._insert([it], copy=False)
                except _Grew:
                    self.con.execute("ROLLBACK")
                    self.con.execute("BEGIN TRANSACTION")
                    added, bad = self._insert([it], copy=True)
            self._record([it], {it.file_id: added}, {it.file_id: bad})
            self.con.execute("COMMIT")
        except _VersionError as e:
            self.con.execute("ROLLBACK")
            self.version_errors.append(str(e))
            return
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self._done([it], {it.file_id: added}, {it.file_id: bad})

    def _load_batch(self, items: list[_Item]) -> bool:
        """Small files of one kind in one statement and transaction; False sends them one by one instead."""
        import duckdb

        self.con.execute("BEGIN TRANSACTION")
        try:
            self._insert(items, copy=False, strict=True)
            ids = ", ".join(str(it.file_id) for it in items)
            totals = dict(
                self.con.execute(
                    f"SELECT file_id, count(*) FROM {items[0].table.name} WHERE file_id IN ({ids}) GROUP BY file_id"
                ).fetchall()
            )
            added = {it.file_id: totals.get(it.file_id, 0) - it.rows for it in items}
            self._record(items, added, {})
            self.con.execute("COMMIT")
        except (duckdb.Error, _Grew, _VersionError):
            # A malformed line, an unknown version or a file growing mid-read: the one-by-one path
            # handles each of those and names the file.
            self.con.execute("ROLLBACK")
            return False
        self._done(items, added, {})
        return True

    def _insert(self, items: list[_Item], copy: bool, strict: bool = False) -> tuple[int, int]:
        """Insert the new lines of ``items`` (one kind); returns (rows, unreadable lines) of a single item."""
        import duckdb

        table = items[0].table
        sources = []
        for it in items:
            if copy or not it.in_place:
                src = self.tmp / f"{it.file_id}.jsonl"
                _copy_slice(it.path, it.start, it.end, src)
                sources.append(src)
            else:
                sources.append(it.path)
        listing = "[" + ", ".join(_sql_str(str(p)) for p in sources) + "]"
        own = {"file_id", "rank", "extra"}
        known = [c for c in table.columns if c.name not in own]
        known_names = {c.name for c in known}
        try:
            if len(items) == 1:
                # Extra keys of a big file are found on a sample; each is read as JSON, which accepts any value.
                sampled = self.con.execute(
                    f"DESCRIBE SELECT * FROM read_ndjson({listing}, ignore_errors=true, sample_size={_SAMPLE})"
                ).fetchall()
                keys = [r[0] for r in sampled]
            else:
                # Small files: every key of every line (a sample of the first files would miss later ones).
                keys = [
                    r[0]
                    for r in self.con.execute(
                        f"SELECT DISTINCT unnest(json_keys(json)) FROM read_ndjson_objects({listing}, ignore_errors=true)"
                    ).fetchall()
                ]
            extras = sorted(k for k in keys if k not in known_names)
        except duckdb.Error:
            extras = []  # an unreadable sample only means no extra columns are detected
        spec = ", ".join(f"{_sql_str(c.name)}: {_sql_str(c.type)}" for c in known)
        spec += "".join(f", {_sql_str(x)}: 'JSON'" for x in extras)
        versions = ", ".join(map(str, KNOWN_EVENT_VERSIONS))
        select = ["f.file_id", "f.rank"]
        for c in known:
            col = "r." + _ident(c.name)
            if c.name == "checkpoint":
                col = self.paths.norm_sql(col)
            elif c.name == "v":
                # Checked while inserting: an unknown version aborts the transaction, no extra scan.
                col = f"CASE WHEN r.v IN ({versions}) THEN r.v ELSE error('{_VERSION_MARK}' || r.v::VARCHAR) END"
            select.append(col)
        if extras:
            select.append("to_json(struct_pack(" + ", ".join(f"{_ident(x)} := r.{_ident(x)}" for x in extras) + "))")
        else:
            select.append("NULL")
        mapping = ", ".join(f"({_sql_str(str(src))}, {it.file_id}, {it.rank})" for src, it in zip(sources, items))
        cols = ", ".join(_ident(c.name) for c in table.columns)
        query = (
            f"INSERT INTO {table.name} ({cols}) SELECT {', '.join(select)} "
            f"FROM read_ndjson({listing}, columns={{{spec}}}, filename='{_SRC_COLUMN}'{{opts}}) r "
            f"JOIN (VALUES {mapping}) f(src, file_id, rank) ON f.src = r.{_SRC_COLUMN} WHERE r.v IS NOT NULL"
        )
        bad = 0
        try:
            try:
                added = self.con.execute(query.replace("{opts}", "")).fetchone()[0]
            except duckdb.Error as e:
                if _VERSION_MARK in str(e) or strict:
                    raise
                # A malformed line in the middle (not just a torn tail): skip such lines, keep the rest, say so.
                self.con.execute("ROLLBACK")
                self.con.execute("BEGIN TRANSACTION")
                added = self.con.execute(query.replace("{opts}", ", ignore_errors=true")).fetchone()[0]
                bad = self.con.execute(
                    f"SELECT count(*) FROM read_ndjson({listing}, columns={{'v': 'VARCHAR'}}, ignore_errors=true) "
                    "WHERE v IS NULL"
                ).fetchone()[0]
                first = str(e).strip().splitlines()[0]
                self.report.warnings.append(
                    f"{items[0].rel}: {bad} unreadable line(s) skipped; first problem: {first}"
                )
        except duckdb.Error as e:
            if _VERSION_MARK not in str(e):
                raise
            found = str(e).split(_VERSION_MARK, 1)[1].split()[0]
            raise _VersionError(
                f"{items[0].rel}: unknown event schema version v={found} "
                f"(this frontload reads {list(KNOWN_EVENT_VERSIONS)})"
            ) from None
        finally:
            for src in sources:
                if src.parent == self.tmp:
                    src.unlink(missing_ok=True)
        # A live writer may have appended while DuckDB read a whole file in place: rows past `end` may be in.
        # Redo from a copy of exactly [start, end), so the recorded offset and the rows agree.
        if any(src == it.path and it.path.stat().st_size != it.size for src, it in zip(sources, items)):
            raise _Grew
        return added, bad


class _Grew(Exception):
    """An event file grew while it was read in place; its insert is redone from a copy of the planned bytes."""


class _VersionError(FrontloadError):
    """An event file of an unknown schema version; collected, then raised together as :class:`IngestError`."""


def ingest(workspace: str | os.PathLike, *, rebuild: bool = False, progress: bool = True) -> IngestReport:
    """Load everything new in ``workspace`` into ``workspace/frontload.duckdb``; returns what was added."""
    started = time.perf_counter()
    ws = Path(workspace)
    if not ws.is_dir():
        raise StoreError(f"{ws}: no such workspace folder")
    db_path = ws / DB_NAME
    if rebuild:
        for p in (db_path, db_path.with_name(db_path.name + ".wal")):
            p.unlink(missing_ok=True)
    report = IngestReport(workspace=ws, db_path=db_path)
    errors: list[str] = []
    paths = _Paths(ws)
    scan = _scan(ws, errors)
    con = open_writable(db_path)
    try:
        _prepare(con, db_path)
        tables = _small_tables(ws, paths, scan, errors)
        # The small files are re-read every time; when nothing in them changed, their tables stay as they are.
        small_fp = fingerprint(tables)
        stored = con.execute("SELECT any_value(inputs_fingerprint) FROM store_info").fetchone()[0]
        changed = stored != small_fp
        if changed:
            con.execute("BEGIN TRANSACTION")
            for name, rows in tables.items():
                before = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                con.execute(f"DELETE FROM {name}")
                _insert_rows(con, TABLE_BY_NAME[name], rows)
                report.new_rows[name] = len(rows) - before
            con.execute("COMMIT")

        run_ids = {folder: info["run_id"] for folder, info in scan.runs}
        report.event_files = len(scan.events)
        loader = _EventLoader(con, ws, paths, report)
        try:
            loader.load_all(scan.events, run_ids, progress)
            errors += loader.version_errors
        finally:
            loader.close()

        con.execute("BEGIN TRANSACTION")
        if changed or loader.changed:
            con.execute("DELETE FROM phases")
            con.execute(PHASES_SQL)
        con.execute("DELETE FROM store_info")
        con.execute(
            "INSERT INTO store_info VALUES (?, ?, ?, ?)", [SCHEMA_VERSION, str(ws.resolve()), time.time(), small_fp]
        )
        con.execute("COMMIT")
        if changed or loader.changed:
            con.execute("CHECKPOINT")
    finally:
        con.close()
    report.seconds = time.perf_counter() - started
    if errors:
        more = f" (and {len(errors) - 1} more: {'; '.join(errors[1:4])})" if len(errors) > 1 else ""
        raise IngestError(f"{errors[0]}{more}; everything else was ingested into {db_path}")
    return report


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
