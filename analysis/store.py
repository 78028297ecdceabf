"""The DuckDB file of a workspace: opening it read-only for queries and writable for the ingest.

Invariants: only :func:`frontload.analysis.ingest.ingest` opens the file writable; every query path
(``connect``, ``query``, ``frontload sql``, reports) goes through two gates:

1. DuckDB itself: the file is opened read-only, external access is off (no file is read or written
   but the store, unless the user names folders whose files may be read), extensions are never
   installed or loaded, and the configuration is locked so no ``SET`` undoes any of it;
2. a statement check that refuses every statement that is not a read (also inside ``EXPLAIN``)
   before anything runs.

Views hold no data and read only the store's tables, so they work on this connection.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from frontload.core.errors import FrontloadError
from frontload.core.workspace import DB_NAME

__all__ = ["DB_NAME", "READ_STATEMENTS", "StoreError", "db_path", "open_writable"]
_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
# Statement types that only read. COPY, ATTACH, INSTALL/LOAD, SET and every DDL/DML are refused:
# COPY ... TO writes files and ATTACH could open another database writable.
READ_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "RELATION")
# ``EXPLAIN ANALYZE`` runs its statement, so what follows EXPLAIN [ANALYZE] [(options)] is checked too.
_EXPLAIN = re.compile(
    r"^(?:\s+|--[^\n]*\n|/\*.*?\*/)*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)


class StoreError(FrontloadError):
    """The store is missing, locked, of another version, or a statement was refused; names the file."""


def db_path(workspace: str | os.PathLike) -> Path:
    """Where a workspace's store lives (a path to a ``.duckdb`` file is taken as is)."""
    p = Path(workspace)
    return p if p.suffix == ".duckdb" else p / DB_NAME


def check_duckdb_file(path: Path) -> None:
    """Refuse a file that is not a DuckDB database (DuckDB's own error would read like a lock conflict)."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        head = f.read(12)
    if head[8:12] != _MAGIC:
        raise StoreError(f"{path}: not a DuckDB file: rebuild with `frontload analysis ingest WORKSPACE --rebuild`")


@contextlib.contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """Hold the store's writer lock (``<store>.lock``) for the block; a second writer fails at once, clearly.

    Taken before anything touches the store, so a ``--rebuild`` never deletes a file another ingest is
    writing. The lock is the kernel's (``flock``): a killed ingest releases it.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{path}: another ingest is writing this store (lock {lock.name} is held); retry when it ends"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_writable(path: Path):
    """A writable connection (ingest only, under :func:`writer_lock`); a store held elsewhere is a clear error."""
    import duckdb

    check_duckdb_file(path)
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as e:
        raise StoreError(f"{path}: cannot open for writing ({e}); is another program using it?") from e
    # Row order within a table is meaningless here (every row carries file_id/seq); dropping the
    # guarantee lets DuckDB parallelise the inserts.
    con.execute("SET preserve_insertion_order = false")
    return con


def _query_config(lock: bool) -> dict[str, object]:
    # Nothing may install or load an extension (both would download or run code). Without folders to
    # allow, everything is set at open, so several such connections in one process share one instance.
    config: dict[str, object] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if lock:
        config |= {"enable_external_access": False, "lock_configuration": True}
    return config


def connect(workspace: str | os.PathLike, *, allow_files: tuple[str | os.PathLike, ...] | list = ()):
    """A read-only DuckDB connection to the workspace's store (run `frontload analysis ingest` first).

    DuckDB enforces it: read-only file, no external access except reading files under the folders in
    ``allow_files``, no extension loading, configuration locked.
    """
    import duckdb

    path = db_path(workspace)
    if not path.is_file():
        raise StoreError(f"{path}: no store yet; run `frontload analysis ingest {Path(workspace)}` first")
    check_duckdb_file(path)
    dirs = [str(Path(d).resolve()).rstrip("/") + "/" for d in allow_files]
    try:
        con = duckdb.connect(str(path), read_only=True, config=_query_config(lock=not dirs))
    except duckdb.IOException as e:
        raise StoreError(
            f"{path}: cannot open read-only ({e}); an ingest may be writing it, retry when it ends"
        ) from e
    except duckdb.ConnectionException as e:
        raise StoreError(
            f"{path}: already open in this process with other settings ({e}); close that connection first"
        ) from e
    if dirs:
        try:
            # allowed_directories can only be set after the open and while external access is on:
            # name the folders, then turn external access off, then lock every setting.
            con.execute("SET allowed_directories = ?", [dirs])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            con.close()
            raise StoreError(
                f"{path}: cannot restrict file access to {', '.join(dirs)} ({e}); "
                "--allow-files needs DuckDB >= 1.2 and no other open connection to this store in this process"
            ) from e
    return con


def _refuse(what: str, query: str) -> StoreError:
    head = " ".join(query.split())[:60]
    return StoreError(
        f"refused {what} statement ({head!r}): `frontload sql` is read-only; "
        "the store is written only by `frontload analysis ingest` (export with --format/-o)"
    )


def _check_statement(con, stmt) -> None:
    kind = stmt.type.name
    if kind not in READ_STATEMENTS:
        raise _refuse(f"a {kind}", stmt.query)
    if kind == "EXPLAIN":
        import duckdb

        m = _EXPLAIN.match(stmt.query)
        try:
            inner = con.extract_statements(m.group("rest")) if m else []
        except duckdb.Error:
            inner = []
        if len(inner) != 1:
            raise _refuse("an EXPLAIN", stmt.query)
        try:
            _check_statement(con, inner[0])
        except StoreError:
            raise _refuse(f"an EXPLAIN of a {inner[0].type.name}", stmt.query) from None


def check_read_only(con, sql: str) -> list[str]:
    """The statements of ``sql``; raises :class:`StoreError` naming any statement that is not a read."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise StoreError(f"cannot parse the query: {str(e).strip()}") from e
    if not statements:
        raise StoreError("empty query")
    for s in statements:
        _check_statement(con, s)
    return [s.query for s in statements]


def _duckdb_message(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) or repr(e)


def execute_read(con, sql: str) -> list:
    """Run read-only ``sql`` statement by statement; one polars DataFrame per statement that returns rows.

    Every statement is checked before the first one runs, and each result is read in full before the
    next statement starts (DuckDB allows one open result per connection).
    """
    import duckdb

    frames = []
    for stmt in check_read_only(con, sql):
        try:
            rel = con.sql(stmt)
            if rel is not None:
                frames.append(rel.pl())
        except duckdb.Error as e:
            raise StoreError(_duckdb_message(e)) from e
    return frames


def query(workspace: str | os.PathLike, sql: str, *, allow_files: tuple[str | os.PathLike, ...] | list = ()):
    """Run a read-only query on the workspace's store; the last statement's result as a polars DataFrame."""
    frames = queries(workspace, sql, allow_files=allow_files)
    return frames[-1] if frames else None


def queries(workspace: str | os.PathLike, sql: str, *, allow_files: tuple[str | os.PathLike, ...] | list = ()):
    """Run read-only ``sql`` (one or more statements) on the store; one polars DataFrame per result, in order."""
    con = connect(workspace, allow_files=allow_files)
    try:
        return execute_read(con, sql)
    finally:
        con.close()
