"""Commands of the analysis stage: ``frontload analysis ingest``, ``frontload sql`` and ``frontload report``.

Handlers only parse arguments and call plain functions (:func:`ingest`, :func:`run_sql`,
:func:`repl`, :func:`frontload.analysis.report.report`); DuckDB, polars and matplotlib are
imported inside them so ``frontload --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TextIO

FORMATS = ("table", "csv", "json", "parquet")


def add_commands(sub) -> None:
    """Register ``analysis``, ``sql`` and ``report`` on the top-level subparsers."""
    analysis = sub.add_parser("analysis", help="the DuckDB store of every run in a workspace")
    analysis.set_defaults(_parser=analysis)
    asub = analysis.add_subparsers(dest="analysis_command", metavar="COMMAND")
    ing = asub.add_parser(
        "ingest", help="load new run folders and events of a workspace into WORKSPACE/frontload.duckdb"
    )
    ing.add_argument("workspace", type=Path, help="the study workspace folder")
    ing.add_argument("--rebuild", action="store_true", help="delete the store first and ingest everything again")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.add_argument(
        "--resamples", type=int, default=None, help="bootstrap resamples for the intervals (default 2000)"
    )
    ing.add_argument("--bootstrap-seed", type=int, default=None, help="the bootstrap's seed (default 0)")
    ing.set_defaults(func=_ingest)

    sql = sub.add_parser("sql", help="run a read-only SQL query on a workspace's store (no query: interactive prompt)")
    sql.add_argument("query", nargs="?", help="SQL to run; omit it for an interactive prompt (or pipe SQL on stdin)")
    sql.add_argument("--workspace", "-w", type=Path, default=Path("."), help="workspace folder (default: .)")
    sql.add_argument("--format", "-f", choices=FORMATS, default="table", help="output format (default: table)")
    sql.add_argument("-o", "--output", type=Path, help="write the result to this file instead of stdout")
    sql.add_argument("--schema", action="store_true", help="print the documented schema of every table and view")
    sql.add_argument("--max-rows", type=int, default=100, help="rows shown in table format (-1: all)")
    sql.add_argument(
        "--allow-files",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="let queries read files under DIR (read_csv, read_parquet, ...; repeatable); nothing else is reachable",
    )
    sql.set_defaults(func=_sql)

    rep = sub.add_parser("report", help="print the ablation and persistence tables and write plots for a workspace")
    rep.add_argument("workspace", type=Path, help="the study workspace folder")
    rep.add_argument("--html", action="store_true", help="also write one self-contained HTML page")
    rep.add_argument("--out", type=Path, help="folder for tables and plots (default: WORKSPACE/report)")
    rep.add_argument("--no-ingest", action="store_true", help="report from the store as is, without ingesting first")
    rep.set_defaults(func=_report)


def _ingest(args: argparse.Namespace) -> int:
    from frontload.analysis.ingest import ingest

    result = ingest(
        args.workspace,
        rebuild=args.rebuild,
        progress=not args.quiet,
        resamples=args.resamples,
        bootstrap_seed=args.bootstrap_seed,
    )
    print(result.summary())
    return 0


def _sql(args: argparse.Namespace) -> int:
    if args.schema:
        from frontload.analysis.schema import schema_markdown

        print(schema_markdown())
        return 0
    if args.query is None:
        if sys.stdin.isatty():
            return repl(args.workspace, allow_files=args.allow_files)
        args.query = sys.stdin.read()
    run_sql(
        args.workspace,
        args.query,
        fmt=args.format,
        output=args.output,
        max_rows=args.max_rows,
        allow_files=args.allow_files,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from frontload.analysis.report import report

    report(args.workspace, out_dir=args.out, html=args.html, ingest_first=not args.no_ingest)
    return 0


def write_frame(df, fmt: str, output: Path | None, out: TextIO, max_rows: int = 100) -> None:
    """Write a polars frame as a table, CSV, JSON (an array of row objects) or Parquet."""
    from frontload.analysis.report import format_table
    from frontload.analysis.store import StoreError

    if fmt == "parquet":
        if output is None:
            raise StoreError("--format parquet needs -o FILE")
        df.write_parquet(output)
        return
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = df.write_json() + "\n"
    else:
        shown = df if max_rows < 0 or df.height <= max_rows else df.head(max_rows)
        text = format_table(shown) + "\n"
        if shown.height < df.height:
            text += f"({df.height} rows, first {max_rows} shown; --max-rows -1 shows all)\n"
    if output is None:
        out.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")


def run_sql(
    workspace: str | os.PathLike,
    sql: str,
    *,
    fmt: str = "table",
    output: Path | None = None,
    out: TextIO | None = None,
    max_rows: int = 100,
    allow_files: tuple[str | os.PathLike, ...] | list = (),
):
    """Run read-only ``sql`` on the workspace's store and write each statement's result in order.

    Returns the last result (a polars frame). ``-o FILE`` takes one result: several are refused before
    any file is written.
    """
    from frontload.analysis.store import StoreError, queries

    if fmt not in FORMATS:
        raise StoreError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    frames = queries(workspace, sql, allow_files=allow_files)
    if output is not None and len(frames) > 1:
        raise StoreError(f"{len(frames)} statements returned results; -o {output} takes one (run them one by one)")
    for i, df in enumerate(frames):
        if i and fmt == "table" and output is None:
            (out or sys.stdout).write("\n")
        write_frame(df, fmt, output, out or sys.stdout, max_rows=max_rows)
    return frames[-1] if frames else None


_REPL_HELP = """.tables          list tables and views
.schema [NAME]   describe every table and view, or one
.quit            leave (also Ctrl-D)
SQL ends with ';' and may span lines; only reads are allowed."""


def repl(
    workspace: str | os.PathLike,
    input_fn=input,
    out: TextIO | None = None,
    allow_files: tuple[str | os.PathLike, ...] | list = (),
) -> int:
    """An interactive read-only SQL prompt on the workspace's store (readline editing and history)."""
    from frontload.analysis.report import format_table
    from frontload.analysis.schema import TABLE_BY_NAME, VIEWS, schema_markdown
    from frontload.analysis.store import StoreError, connect, execute_read

    out = out or sys.stdout
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - importing it gives input() line editing and history
    con = connect(workspace, allow_files=allow_files)
    out.write(f"frontload sql on {Path(workspace)} (read-only). .help for commands.\n")
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input_fn("sql> " if not buffer else "...> ")
            except EOFError:
                out.write("\n")
                break
            stripped = line.strip()
            if not buffer and stripped.startswith("."):
                cmd, _, arg = stripped.partition(" ")
                if cmd in (".quit", ".exit", ".q"):
                    break
                if cmd == ".help":
                    out.write(_REPL_HELP + "\n")
                elif cmd == ".tables":
                    names = [*TABLE_BY_NAME, *(v.name for v in VIEWS)]
                    out.write("  ".join(names) + "\n")
                elif cmd == ".schema":
                    if arg:
                        try:
                            out.write(format_table(execute_read(con, f"DESCRIBE {arg.strip()}")[-1]) + "\n")
                        except StoreError as e:
                            out.write(f"error: {e}\n")
                    else:
                        out.write(schema_markdown() + "\n")
                else:
                    out.write(f"unknown command {cmd}; .help lists them\n")
                continue
            if not stripped:
                continue
            buffer.append(line)
            if not stripped.endswith(";"):
                continue
            sql, buffer = "\n".join(buffer), []
            try:
                for df in execute_read(con, sql):
                    out.write(format_table(df) + "\n")
            except StoreError as e:
                out.write(f"error: {e}\n")
    finally:
        con.close()
    return 0
