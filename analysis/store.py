"""The DuckDB file of a workspace: opening it read-only for queries and writable for the ingest.

Invariants: only :func:`frontload.analysis.ingest.ingest` opens the file writable; every query path
(``connect``, ``query``, ``frontload sql``, reports) opens it read-only *and* refuses statements
that are not reads before running them, so an export or a notebook can never change the store.
"""

from __future__ import annotations

import os
from pathlib import Path

from frontload.core.errors import FrontloadError
from frontload.core.workspace import DB_NAME

__all__ = ["DB_NAME", "READ_STATEMENTS", "StoreError", "db_path", "open_writable"]
# Statement types that only read. COPY, ATTACH, INSTALL/LOAD, SET and every DDL/DML are refused:
# COPY ... TO writes files and ATTACH could open another database writable.
READ_STATEMENTS = ("SELECT", "EXPLAIN", "PRAGMA", "RELATION")


class StoreError(FrontloadError):
    """The store is missing, locked, of another version, or a statement was refused; names the file."""


def db_path(workspace: str | os.PathLike) -> Path:
    """Where a workspace's store lives (a path to a ``.duckdb`` file is taken as is)."""
    p = Path(workspace)
    return p if p.suffix == ".duckdb" else p / DB_NAME


def open_writable(path: Path):
    """A writable connection (ingest only); a store held by another writer is a clear error."""
    import duckdb

    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as e:
        raise StoreError(f"{path}: cannot open for writing ({e}); is another ingest running?") from e
    # Row order within a table is meaningless here (every row carries file_id/seq); dropping the
    # guarantee lets DuckDB parallelise the inserts.
    con.execute("SET preserve_insertion_order = false")
    return con


def connect(workspace: str | os.PathLike):
    """A read-only DuckDB connection to the workspace's store (run `frontload analysis ingest` first)."""
    import duckdb

    path = db_path(workspace)
    if not path.is_file():
        raise StoreError(f"{path}: no store yet; run `frontload analysis ingest {Path(workspace)}` first")
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as e:
        raise StoreError(
            f"{path}: cannot open read-only ({e}); an ingest may be writing it, retry when it ends"
        ) from e


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
        kind = s.type.name
        if kind not in READ_STATEMENTS:
            head = " ".join(s.query.split())[:60]
            raise StoreError(
                f"refused a {kind} statement ({head!r}): `frontload sql` is read-only; "
                "the store is written only by `frontload analysis ingest` (export with --format/-o)"
            )
    return [s.query for s in statements]


def execute_read(con, sql: str):
    """Run read-only ``sql`` (several statements allowed) and return the last statement's relation."""
    import duckdb

    statements = check_read_only(con, sql)
    try:
        for stmt in statements[:-1]:
            con.execute(stmt)
        return con.sql(statements[-1])
    except duckdb.Error as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise StoreError(" ".join(lines[:2]) or repr(e)) from e


def query(workspace: str | os.PathLike, sql: str):
    """Run a read-only query on the workspace's store and return a polars DataFrame."""
    con = connect(workspace)
    try:
        rel = execute_read(con, sql)
        return rel.pl() if rel is not None else None
    finally:
        con.close()
