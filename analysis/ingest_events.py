"""Event files into their tables: append-only JSONL read from the byte offset already ingested.

:class:`EventLoader` loads every event file with new complete lines: a big file alone in its own
transaction, small files of one kind many per statement; each transaction records the new offset
in ``ingest_files`` with the rows, so a crash loses nothing and duplicates nothing. The invariants
are listed in :mod:`frontload.analysis.ingest`.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontload.analysis.ingest_files import Paths
from frontload.analysis.schema import EVENT_TABLES, Table
from frontload.core.errors import FrontloadError

if TYPE_CHECKING:
    from frontload.analysis.ingest import IngestReport

KNOWN_EVENT_VERSIONS = (1,)
EVENT_FILE = re.compile(r"^(?P<kind>[A-Za-z0-9_]+)\.rank(?P<rank>\d+)\.jsonl$")
_CHUNK = 1 << 24
_SAMPLE = 1024  # lines sampled per big file to find keys the schema does not name
_BATCH_BYTES = 4 << 20  # files with at most this many new bytes are loaded many per statement
_BATCH_FILES = 256
_SRC_COLUMN = "frontload_source_file"
_VERSION_MARK = "frontload: unknown event version "


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


class EventLoader:
    """Loads event files: big ones one per transaction, small ones many per statement (one per kind)."""

    def __init__(self, con, ws: Path, paths: Paths, report: IngestReport, default_seed: int = 0) -> None:
        self.con, self.ws, self.paths, self.report = con, ws, paths, report
        self.default_seed = default_seed
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
        from frontload.core.progress import progress_bar

        items = [it for path, run_dir in events if (it := self._plan(path, run_ids.get(run_dir))) is not None]
        small = [it for it in items if it.end - it.start <= _BATCH_BYTES]
        big = [it for it in items if it.end - it.start > _BATCH_BYTES]
        batches = []
        for kind in EVENT_TABLES:
            group = [it for it in small if it.kind == kind]
            batches += [group[i : i + _BATCH_FILES] for i in range(0, len(group), _BATCH_FILES)]
        work = [[it] for it in big] + batches
        bar = progress_bar(
            total=len(items), desc="ingest events", unit="file", disable=not progress or len(items) < 20
        )
        for batch in work:
            if len(batch) == 1 or not self._load_batch(batch):
                for it in batch:
                    self._load_one(it)
            bar.update(len(batch))
        bar.close()

    def _plan(self, path: Path, run_id: str | None) -> _Item | None:
        rel = self.paths.rel(path)
        m = EVENT_FILE.match(path.name)
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
        except VersionError as e:
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
        except (duckdb.Error, _Grew, VersionError):
            # A malformed line, an unknown version or a file growing mid-read: the one-by-one path
            # handles each of those and names the file.
            self.con.execute("ROLLBACK")
            return False
        self._done(items, added, {})
        return True

    def _insert(self, items: list[_Item], copy: bool, strict: bool = False) -> tuple[int, int]:
        """Insert the new lines of ``items`` (one kind); returns (rows, unreadable lines) of a single item."""
        import duckdb

        sources = []
        for it in items:
            if copy or not it.in_place:
                src = self.tmp / f"{it.file_id}.jsonl"
                _copy_slice(it.path, it.start, it.end, src)
                sources.append(src)
            else:
                sources.append(it.path)
        listing = "[" + ", ".join(_sql_str(str(p)) for p in sources) + "]"
        query = self._insert_query(items, sources, listing)
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
            raise VersionError(
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

    def _seed_sql(self, col: str, has_checkpoint: bool) -> str:
        # An event naming its seed wins; else the seed its run's config.json names; else (an eval run
        # started by hand) the seed of the run that wrote the evaluated checkpoint; else the run's
        # defaulted seed. Runs and checkpoints are loaded before events.
        where = [col, "(SELECT TRY_CAST(rs.info->>'seed' AS BIGINT) FROM runs rs WHERE rs.run_id = r.run_id)"]
        if has_checkpoint:
            where.append(
                "(SELECT any_value(rs.seed) FROM checkpoints ck JOIN runs rs ON rs.run_id = ck.run_id "
                f"WHERE ck.path = {self.paths.norm_sql('r.checkpoint')})"
            )
        where += ["(SELECT rs.seed FROM runs rs WHERE rs.run_id = r.run_id)", str(int(self.default_seed))]
        return f"COALESCE({', '.join(where)})"

    def _insert_query(self, items: list[_Item], sources: list[Path], listing: str) -> str:
        """The INSERT … SELECT that reads ``sources`` with the table's typed columns plus any extra keys as JSON.

        ``{opts}`` in it is left for read_ndjson options (``ignore_errors`` on a retry).
        """
        import duckdb

        table = items[0].table
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
            elif c.name == "seed":
                col = self._seed_sql(col, "checkpoint" in known_names)
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
        return (
            f"INSERT INTO {table.name} ({cols}) SELECT {', '.join(select)} "
            f"FROM read_ndjson({listing}, columns={{{spec}}}, filename='{_SRC_COLUMN}'{{opts}}) r "
            f"JOIN (VALUES {mapping}) f(src, file_id, rank) ON f.src = r.{_SRC_COLUMN} WHERE r.v IS NOT NULL"
        )


class _Grew(Exception):
    """An event file grew while it was read in place; its insert is redone from a copy of the planned bytes."""


class VersionError(FrontloadError):
    """An event file of an unknown schema version; collected, then raised together as :class:`IngestError`."""
