"""`frontload sql` cannot write, download or read outside the store; a broken or busy store says what it is.

Two gates: DuckDB itself (read-only file, external access off, no extensions, configuration locked)
and the statement check (which also looks inside ``EXPLAIN``).
"""

from __future__ import annotations

import importlib
import io
import threading
from pathlib import Path

import duckdb
import pytest
from conftest import ARMS, SEEDS, STEPS, write_study

from frontload.analysis import connect, ingest, query
from frontload.analysis.cli import run_sql
from frontload.analysis.store import StoreError
from frontload.cli import main

# The package exports the function `ingest`, which hides the module of the same name.
ingest_module = importlib.import_module("frontload.analysis.ingest")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    ws = write_study(tmp_path_factory.mktemp("sqlstudy") / "ws")
    ingest(ws, progress=False)
    return ws


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE COPY (SELECT 'x') TO '{out}'",
        "explain analyse (format json) copy (select 'x') to '{out}'",
        "/* note */ EXPLAIN ANALYZE COPY (SELECT 'x') TO '{out}'",
        "EXPLAIN ANALYZE INSTALL httpfs",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    ],
)
def test_sql_refuses_explain_analyze_of_a_write(ingested, tmp_path, sql):
    out = tmp_path / "written.csv"
    with pytest.raises(StoreError, match=r"refused an EXPLAIN of a (COPY|LOAD|CREATE) statement.*read-only"):
        query(ingested, sql.format(out=out))
    assert not out.exists()


def test_duckdb_itself_refuses_files_settings_and_extensions(ingested, tmp_path):
    """The second gate: the connection `frontload sql` uses cannot write, read files or unlock itself."""
    con = connect(ingested)
    try:
        for sql in (
            f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'",
            "SET enable_external_access = true",
            "SET autoinstall_known_extensions = true",
            "LOAD httpfs",
            f"ATTACH '{tmp_path / 'o.duckdb'}' AS o",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
            # Views read only the store's tables, so they answer on this connection.
            assert con.execute("SELECT count(*) FROM persistence").fetchone()[0] > 0
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []


def test_sql_reads_local_files_only_under_allow_files(ingested, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "q.csv").write_text("arm\nbaseline\n")
    (tmp_path / "secret.csv").write_text("arm\nhidden\n")
    sql = "SELECT count(*) FROM arms JOIN read_csv('{}') USING (arm)"
    with pytest.raises(StoreError, match="disabled by configuration"):
        query(ingested, sql.format(data / "q.csv"))
    assert query(ingested, sql.format(data / "q.csv"), allow_files=[data]).item() == 1
    with pytest.raises(StoreError, match="disabled by configuration"):
        query(ingested, sql.format(tmp_path / "secret.csv"), allow_files=[data])
    with pytest.raises(StoreError, match="refused"):
        query(ingested, f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{data / 'w.csv'}'", allow_files=[data])
    assert sorted(p.name for p in data.iterdir()) == ["q.csv"]


def test_sql_runs_several_statements_in_order_and_prints_each(ingested, capsys, tmp_path):
    out = io.StringIO()
    last = run_sql(ingested, "SELECT 1 AS first_result; SELECT count(*) AS n_arms FROM arms", out=out)
    text = out.getvalue()
    assert "first_result" in text and "n_arms" in text and text.index("first_result") < text.index("n_arms")
    assert last.item() == 3
    assert main(["sql", "SELECT 'a' AS x; SELECT 'b' AS y", "-w", str(ingested), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "x\na\ny\nb\n"
    with pytest.raises(StoreError, match="2 statements returned results; -o"):
        run_sql(ingested, "SELECT 1; SELECT 2", fmt="csv", output=tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()


def test_garbage_store_says_not_a_duckdb_file(tmp_path):
    ws = write_study(tmp_path / "ws")
    (ws / "frontload.duckdb").write_bytes(b"this is not a database\n" * 100)
    with pytest.raises(StoreError, match="not a DuckDB file: rebuild with .*--rebuild"):
        query(ws, "SELECT 1")
    with pytest.raises(StoreError, match="not a DuckDB file: rebuild with .*--rebuild"):
        ingest(ws, progress=False)
    assert ingest(ws, progress=False, rebuild=True).new_rows["metrics"] == len(ARMS) * len(SEEDS) * sum(STEPS.values())


def test_concurrent_rebuild_fails_clearly_and_deletes_nothing_in_use(tmp_path, monkeypatch):
    ws = write_study(tmp_path / "ws")
    ingest(ws, progress=False)
    entered, release = threading.Event(), threading.Event()
    real_scan, calls = ingest_module.scan, []

    def slow_scan(*args):
        calls.append(1)
        if len(calls) == 1:  # the first ingest pauses mid-run, holding whatever it holds
            entered.set()
            release.wait(30)
        return real_scan(*args)

    monkeypatch.setattr(ingest_module, "scan", slow_scan)
    results: list = []
    first = threading.Thread(target=lambda: results.append(ingest(ws, progress=False, rebuild=True)))
    first.start()
    try:
        assert entered.wait(30)
        with pytest.raises(StoreError, match="another ingest is writing this store"):
            ingest(ws, progress=False, rebuild=True)
    finally:
        release.set()
        first.join(60)
    assert results and results[0].new_rows["metrics"] == len(ARMS) * len(SEEDS) * sum(STEPS.values())
    assert query(ws, "SELECT count(*) FROM metrics").item() == len(ARMS) * len(SEEDS) * sum(STEPS.values())


def test_sql_command_allow_files_flag(ingested, tmp_path, capsys):
    (tmp_path / "q.csv").write_text("v\n7\n")
    sql = f"SELECT v FROM read_csv('{tmp_path / 'q.csv'}')"
    assert main(["sql", sql, "-w", str(ingested), "--format", "csv"]) == 2
    assert "disabled by configuration" in capsys.readouterr().err
    assert main(["sql", sql, "-w", str(ingested), "--format", "csv", "--allow-files", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "v\n7\n"
    assert Path(tmp_path).exists()


def test_locked_connections_coexist_in_one_process(ingested):
    con = connect(ingested)
    try:
        assert query(ingested, "SELECT count(*) FROM arms").item() == 3  # a second connection meanwhile
        with pytest.raises(duckdb.Error):
            con.execute("SET lock_configuration = false")
    finally:
        con.close()
