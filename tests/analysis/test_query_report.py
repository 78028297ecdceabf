"""Queries are read-only, exports and other readers work, the report writes its tables and plots."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import write_study

from frontload.analysis import connect, ingest, query, report
from frontload.analysis.cli import repl, run_sql
from frontload.analysis.schema import schema_markdown
from frontload.analysis.store import StoreError
from frontload.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """One ingested study shared by the tests that only read it."""
    ws = write_study(tmp_path_factory.mktemp("study") / "ws")
    ingest(ws, progress=False)
    return ws


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM metrics",
        "DROP TABLE runs",
        "INSERT INTO arms (arm) VALUES ('x')",
        "CREATE TABLE t AS SELECT 1",
        "COPY metrics TO 'out.csv'",
        "ATTACH 'other.duckdb' AS o",
        "SELECT 1; UPDATE runs SET arm = 'x'",
    ],
)
def test_writing_statements_are_refused(ingested, sql):
    with pytest.raises(StoreError, match="read-only"):
        query(ingested, sql)
    assert query(ingested, "SELECT count(*) FROM arms").item() == 3


def test_sql_command_refuses_writes_with_a_clear_message(ingested, capsys):
    assert main(["sql", "DROP TABLE runs", "-w", str(ingested)]) == 2
    err = capsys.readouterr().err
    assert "refused a DROP statement" in err and "read-only" in err


def test_connection_itself_is_read_only(ingested):
    con = connect(ingested)
    try:
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM metrics")
    finally:
        con.close()


def test_missing_store_and_bad_sql_are_clear_errors(tmp_path, ingested):
    with pytest.raises(StoreError, match="no store yet; run `frontload analysis ingest"):
        query(tmp_path, "SELECT 1")
    with pytest.raises(StoreError, match="nosuchtable"):
        query(ingested, "SELECT * FROM nosuchtable")


def test_exports_and_other_readers(ingested, tmp_path, capsys):
    sql = "SELECT * FROM ablation ORDER BY arm, phase, task, metric"
    expected = query(ingested, sql)
    run_sql(ingested, sql, fmt="parquet", output=tmp_path / "a.parquet")
    assert pl.read_parquet(tmp_path / "a.parquet").equals(expected)
    run_sql(ingested, sql, fmt="csv", output=tmp_path / "a.csv")
    assert pl.read_csv(tmp_path / "a.csv").height == expected.height
    assert main(["sql", sql, "-w", str(ingested), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == expected.height
    # The same file opens with the duckdb module directly, as pandas and polars frames.
    con = duckdb.connect(str(ingested / "frontload.duckdb"), read_only=True)
    try:
        assert len(con.sql(sql).df()) == expected.height
        assert con.sql("SELECT * FROM persistence").pl().height == 2 * (2 * 3 * 3 + 1)  # arm, task, metric, phase
    finally:
        con.close()


def test_interactive_prompt(ingested):
    lines = iter([".tables", "SELECT count(*) AS n_arms", "FROM arms;", "DELETE FROM runs;", ".schema runs", ".quit"])
    out = io.StringIO()
    assert repl(ingested, input_fn=lambda prompt: next(lines), out=out) == 0
    text = out.getvalue()
    assert "persistence" in text and "n_arms" in text and "│ 3" in text
    assert "refused a DELETE statement" in text
    assert "run_id" in text


def test_schema_is_documented_and_doc_is_current(capsys):
    assert main(["sql", "--schema"]) == 0
    printed = capsys.readouterr().out
    for name in ("runs", "arms", "phases", "checkpoints", "corpora", "shards", "mix_plan", "filter_stats"):
        assert f"### `{name}`" in printed
    for name in ("metrics", "evals", "predictions", "rollouts", "ablation", "persistence", "data_mix", "lineage"):
        assert f"### `{name}`" in printed
    assert (REPO / "docs" / "schema.md").read_text(encoding="utf-8") == schema_markdown() + "\n"


def test_report_prints_tables_and_writes_plots(study_ws, capsys):
    paths = report(study_ws, html=True)
    out = capsys.readouterr().out
    assert "ablation" in out and "persistence (gain over baseline" in out and "front_loaded_more" in out
    assert set(paths.plots) == {
        "loss_curves",
        "scores_by_phase",
        "gains_by_phase",
        "pass_at_k",
        "rl_reward",
        "data_mix",
    }
    for p in paths.plots.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert pl.read_csv(paths.tables["persistence"]).height == 2 * (2 * 3 * 3 + 1)
    ab = paths.ablation
    assert ab.columns[:2] == ["arm", "phase"] and ab.height == 9
    row = ab.filter((pl.col("arm") == "front_loaded") & (pl.col("phase") == "rl"))
    assert row["heldout_arithmetic pass@1"].item() == pytest.approx(0.55)
    page = paths.html.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6 and "<table>" in page
    # The printed persistence table: gain [interval] after each phase and the verdict.
    line = next(x for x in out.splitlines() if "front_loaded " in x and "answer_nll" in x and "arithmetic" in x)
    assert "+0.300 [+0.295, +0.305]" in line and "persists" in line
    assert {"min_detectable_gain", "se", "half_width"} <= set(pl.read_csv(paths.tables["power"]).columns)
    # The verdict comes first, one line per arm, task and metric, with every phase's gain and interval.
    verdict = next(
        x for x in out.splitlines() if x.startswith("front_loaded vs baseline on heldout_arithmetic answer_nll")
    )
    assert out.index(verdict) < out.index("ablation (score")
    assert "+0.300 [+0.295, +0.305] after" in verdict and verdict.endswith("-> persists")
    assert paths.tables["markdown"].read_text(encoding="utf-8").startswith("## verdicts")


def test_report_command(ingested, tmp_path, capsys):
    assert main(["report", str(ingested), "--no-ingest", "--out", str(tmp_path / "r")]) == 0
    assert "persistence" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "r").glob("*.png")) == [
        "data_mix.png",
        "gains_by_phase.png",
        "loss_curves.png",
        "pass_at_k.png",
        "rl_reward.png",
        "scores_by_phase.png",
    ]


def test_flat_plan_files_under_mix_are_read(tmp_path):
    """A plan written as WORKSPACE/mix/<arm>/<phase>/plan.json with a flat stages list."""
    ws = tmp_path / "ws"
    plan = {
        "fingerprint": "p1",
        "stages": [
            {"index": 0, "budget": {"tokens": 1000}, "sources": [{"name": "web", "tokens": 1000, "samples": 10}]},
            {
                "index": 1,
                "budget": {"tokens": 1000},
                "sources": [
                    {"name": "web", "tokens": 750, "samples": 7, "share": 0.75},
                    {"name": "math", "tokens": 250, "samples": 3, "share": 0.25},
                ],
            },
        ],
    }
    (ws / "mix" / "a" / "pretrain").mkdir(parents=True)
    (ws / "mix" / "a" / "pretrain" / "plan.json").write_text(json.dumps(plan))
    ingest(ws, progress=False)
    got = dict(query(ws, "SELECT source, tokens FROM data_mix WHERE arm = 'a' AND phase = 'pretrain'").iter_rows())
    assert got == {"web": 1750, "math": 250}
