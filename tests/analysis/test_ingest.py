"""Ingest: the persistence answer by hand, idempotence, incremental loads, torn and corrupt files, versions."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import duckdb
import pytest
from conftest import STEPS

from frontload.analysis import ingest, query
from frontload.analysis.ingest import IngestError
from frontload.analysis.store import StoreError
from frontload.cli import main
from frontload.core.events import RunFolder

COUNTED = ("runs", "checkpoints", "corpora", "shards", "mix_plan", "metrics", "evals", "predictions", "rollouts")


def _counts(ws) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in COUNTED)
    return dict(query(ws, sql).iter_rows())


def _metrics_file(ws, arm="front_loaded", phase="pretrain"):
    (run_dir,) = (ws / "runs" / arm / phase).iterdir()
    return run_dir, run_dir / "events" / "metrics.rank0.jsonl"


def test_persistence_from_the_command_line_matches_hand_computed_gains(study_ws, capsys):
    assert main(["analysis", "ingest", str(study_ws), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sql", "SELECT * FROM persistence", "--workspace", str(study_ws), "--format", "json"]) == 0
    rows = {(r["arm"], r["task"], r["metric"]): r for r in json.loads(capsys.readouterr().out)}
    # By hand from conftest.SCORES / PERPLEXITY: arm score minus baseline score after each phase.
    expected = {
        ("front_loaded", "heldout_arithmetic", "pass@1"): (0.18 - 0.10, 0.38 - 0.30, 0.55 - 0.45, True),
        ("front_loaded", "heldout_word_problems", "pass@1"): (0.09 - 0.05, 0.26 - 0.20, 0.29 - 0.30, False),
        ("front_loaded_more", "heldout_arithmetic", "pass@1"): (0.22 - 0.10, 0.41 - 0.30, 0.60 - 0.45, True),
        ("front_loaded_more", "heldout_word_problems", "pass@1"): (0.12 - 0.05, 0.27 - 0.20, 0.36 - 0.30, True),
    }
    for key, (pre, sft, rl, persists) in expected.items():
        row = rows[key]
        assert row["baseline_arm"] == "baseline"
        assert row["gain_pretrain"] == pytest.approx(pre)
        assert row["gain_sft"] == pytest.approx(sft)
        assert row["gain_rl"] == pytest.approx(rl)
        assert row["persists"] is persists
    # Perplexity: lower is better, so the gain is baseline minus arm.
    assert rows[("front_loaded", "heldout_text", "perplexity")]["gain_pretrain"] == pytest.approx(12.0 - 11.5)
    assert rows[("front_loaded_more", "heldout_text", "perplexity")]["gain_pretrain"] == pytest.approx(12.0 - 12.5)
    assert not any(arm == "baseline" for arm, _, _ in rows)
    # pass@k is reported under its k.
    assert rows[("front_loaded", "heldout_arithmetic", "pass@2")]["gain_rl"] == pytest.approx(1.5 * (0.55 - 0.45))


def test_ablation_uses_the_last_checkpoint_of_each_phase_and_data_mix_sums_stages(study_ws):
    ingest(study_ws, progress=False)
    ab = query(study_ws, "SELECT arm, phase, task, value, step FROM ablation WHERE metric = 'pass@1'")
    assert ab.height == 3 * 3 * 2
    row = ab.filter((ab["arm"] == "front_loaded") & (ab["phase"] == "sft") & (ab["task"] == "heldout_arithmetic"))
    assert row["value"][0] == pytest.approx(0.38) and row["step"][0] == STEPS["sft"]
    mix = query(
        study_ws, "SELECT source, tokens, share FROM data_mix WHERE arm = 'front_loaded' AND phase = 'pretrain'"
    )
    got = {r[0]: (r[1], r[2]) for r in mix.iter_rows()}
    # Stage 1: 600k web; stage 2: 400k at 80/20 web/reasoning.
    assert got["web"][0] == 600_000 + 320_000 and got["reasoning_diverse"][0] == 80_000
    assert got["reasoning_diverse"][1] == pytest.approx(0.08)


def test_ingest_twice_is_once(study_ws):
    first = ingest(study_ws, progress=False)
    counts = _counts(study_ws)
    assert counts["metrics"] == 3 * sum(STEPS.values())
    second = ingest(study_ws, progress=False)
    assert _counts(study_ws) == counts
    assert first.new_rows["metrics"] == counts["metrics"]
    assert second.total_new_rows == 0 and second.event_files_read == 0


def test_incremental_ingest_reads_only_new_events(study_ws):
    ingest(study_ws, progress=False)
    before = _counts(study_ws)
    run_dir, _ = _metrics_file(study_ws)
    with RunFolder(run_dir, stage="pretrain", config={}) as run:  # a resumed run keeps its id
        for step in range(STEPS["pretrain"] + 1, STEPS["pretrain"] + 6):
            run.log("metrics", phase="pretrain", step=step, loss=0.5, lr=1e-4)
    report = ingest(study_ws, progress=False)
    after = _counts(study_ws)
    assert report.new_rows["metrics"] == 5 and report.event_files_read == 1
    assert after["metrics"] == before["metrics"] + 5
    assert {k: v for k, v in after.items() if k != "metrics"} == {k: v for k, v in before.items() if k != "metrics"}
    files = query(
        study_ws, "SELECT lines, rows_added FROM ingest_files WHERE path LIKE '%front_loaded/pretrain%metrics%'"
    )
    assert files.row(0) == (STEPS["pretrain"] + 5, STEPS["pretrain"] + 5)


def test_torn_last_line_is_reported_then_completed_without_duplicates(study_ws):
    run_dir, path = _metrics_file(study_ws)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"v": 1, "run_id": "x", "seq": 999, "step": 9')  # the writer was killed mid-line
    report = ingest(study_ws, progress=False)
    assert any(str(path.relative_to(study_ws)) in w and "after the last complete line" in w for w in report.warnings)
    assert report.new_rows["metrics"] == 3 * sum(STEPS.values())
    # The run resumes: RunFolder cuts the torn line and appends; the next ingest takes just the new event.
    with RunFolder(run_dir, stage="pretrain", config={}) as run:
        run.log("metrics", phase="pretrain", step=STEPS["pretrain"] + 1, loss=0.5)
    report = ingest(study_ws, progress=False)
    assert report.new_rows["metrics"] == 1 and not report.warnings
    steps = query(
        study_ws, f"SELECT count(*) AS n, count(DISTINCT seq) AS d FROM metrics WHERE run_id = '{run.run_id}'"
    )
    assert steps.row(0) == (STEPS["pretrain"] + 1, STEPS["pretrain"] + 1)


def test_corrupt_middle_line_is_skipped_and_counted(study_ws):
    _, path = _metrics_file(study_ws)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(3, "{this is not json\n")
    path.write_text("".join(lines))
    report = ingest(study_ws, progress=False)
    assert any("1 unreadable line" in w and path.name in w for w in report.warnings)
    bad = query(
        study_ws, "SELECT bad_lines, rows_added FROM ingest_files WHERE path LIKE '%front_loaded/pretrain%metrics%'"
    )
    assert bad.row(0) == (1, STEPS["pretrain"])


def test_unknown_event_version_is_an_error_naming_the_file(study_ws):
    _, path = _metrics_file(study_ws)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"v": 2, "run_id": "x", "seq": 10_000, "step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(IngestError, match=r"metrics\.rank0\.jsonl: unknown event schema version v=2"):
        ingest(study_ws, progress=False)
    # Everything else went in; the refused file added no rows.
    assert query(study_ws, "SELECT count(*) FROM metrics").item() == 3 * sum(STEPS.values()) - STEPS["pretrain"]


@pytest.mark.parametrize("which", ["config", "manifest"])
def test_unknown_file_schema_version_is_an_error_naming_the_file(study_ws, which):
    if which == "config":
        path = next((study_ws / "runs" / "baseline" / "sft").iterdir()) / "config.json"
    else:
        path = next((study_ws / "corpora" / "web").iterdir()) / "manifest.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(IngestError, match=rf"{path.name}: unknown schema_version 7"):
        ingest(study_ws, progress=False)


def test_extra_fields_are_kept_and_unknown_kinds_reported(study_ws):
    run_dir, _ = _metrics_file(study_ws)
    (run_dir / "events" / "surprise.rank0.jsonl").write_text('{"v": 1}\n')
    report = ingest(study_ws, progress=False)
    assert any("surprise.rank0.jsonl" in w and "skipped" in w for w in report.warnings)
    temps = query(study_ws, "SELECT DISTINCT extra->>'temperature' AS t FROM evals WHERE metric = 'pass@1'")
    assert temps["t"].to_list() == ["0.7"]
    # A key that only the last of many small files has is kept too (they are read together).
    (late,) = (study_ws / "runs" / "front_loaded_more" / "eval-rl").iterdir()
    with RunFolder(late, stage="eval", config={}) as ev:
        ev.log(
            "evals", phase="rl", checkpoint="elsewhere", task="t", metric="accuracy", value=1.0, judge={"model": "m"}
        )
    ingest(study_ws, progress=False)
    assert query(study_ws, "SELECT extra->>'$.judge.model' FROM evals WHERE task = 't'").item() == "m"


# The example query of docs/analysis.md ("Lineage").
LINEAGE_SQL = """
SELECT depth, ancestor_phase, source, source_tokens, corpus_path,
       corpus_config->>'$.source.kind' AS corpus_kind, run_config->>'phase' AS run_phase
FROM lineage
WHERE arm = 'front_loaded' AND task = 'heldout_arithmetic' AND metric = 'pass@1'
  AND checkpoint = (SELECT checkpoint FROM ablation
                    WHERE arm = 'front_loaded' AND phase = 'rl' AND task = 'heldout_arithmetic' AND metric = 'pass@1')
ORDER BY depth, source
"""


def test_lineage_from_an_eval_row_to_corpora_and_configs(study_ws):
    ingest(study_ws, progress=False)
    rows = query(study_ws, LINEAGE_SQL).rows()
    # depth 0: the RL checkpoint (no mix plan); 1: SFT on reasoning_hq; 2: pretraining on web + reasoning_diverse.
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (0, "rl", None),
        (1, "sft", "reasoning_hq"),
        (2, "pretrain", "reasoning_diverse"),
        (2, "pretrain", "web"),
    ]
    assert rows[2][3] == 80_000 and rows[3][3] == 920_000
    assert rows[1][4].startswith("corpora/reasoning_hq/") and rows[2][4].startswith("corpora/reasoning_diverse/")
    assert rows[2][5] == "generators" and rows[3][5] == "packaged_text"
    assert [r[6] for r in rows] == ["rl", "sft", "pretrain", "pretrain"]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "analysis.md").read_text(encoding="utf-8")
    assert LINEAGE_SQL.strip() in doc


def test_paths_relative_to_the_working_directory_join_and_reevaluation_replaces(study_ws, monkeypatch):
    monkeypatch.chdir(study_ws.parent)
    (ckpt,) = [p for p in (study_ws / "runs" / "front_loaded" / "rl").glob("*/checkpoints/*") if p.name.endswith("30")]
    # An evaluation run started from the workspace's parent, naming the checkpoint relative to it.
    with RunFolder(study_ws / "runs" / "late-eval", stage="eval", config={}) as ev:
        rel = ckpt.relative_to(study_ws.parent)
        ev.log(
            "evals",
            phase="rl",
            checkpoint=f"./{rel}/",
            step=30,
            task="heldout_arithmetic",
            metric="pass@1",
            value=0.99,
        )
    ingest(study_ws.name, progress=False)  # the workspace given relative to the working directory too
    got = query(
        study_ws.name,
        "SELECT value, checkpoint FROM ablation WHERE arm = 'front_loaded' AND phase = 'rl' "
        "AND task = 'heldout_arithmetic' AND metric = 'pass@1'",
    )
    assert got.row(0) == (0.99, str(ckpt.relative_to(study_ws)))


def test_a_file_growing_while_read_is_taken_only_up_to_the_recorded_offset(study_ws, monkeypatch):
    ingest_module = importlib.import_module("frontload.analysis.ingest_events")
    run_dir, path = _metrics_file(study_ws)
    planned = ingest_module._last_line_end

    def writer_appends_meanwhile(p, offset, size):
        end = planned(p, offset, size)
        if p == path:  # a live trainer logs one more step after the ingest looked at the file
            with RunFolder(run_dir, stage="pretrain", config={}) as run:
                run.log("metrics", phase="pretrain", step=10_000, loss=0.1)
        return end

    monkeypatch.setattr(ingest_module, "_last_line_end", writer_appends_meanwhile)
    assert ingest(study_ws, progress=False).new_rows["metrics"] == 3 * sum(STEPS.values())
    monkeypatch.undo()
    assert ingest(study_ws, progress=False).new_rows["metrics"] == 1
    run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
    seqs = query(study_ws, f"SELECT count(*), count(DISTINCT seq) FROM metrics WHERE run_id = '{run_id}'")
    assert seqs.row(0) == (STEPS["pretrain"] + 1, STEPS["pretrain"] + 1)


def test_a_store_of_another_version_asks_for_a_rebuild(study_ws):
    con = duckdb.connect(str(study_ws / "frontload.duckdb"))
    con.execute("CREATE TABLE store_info (schema_version INTEGER, workspace VARCHAR)")
    con.execute("INSERT INTO store_info VALUES (0, 'x')")
    con.close()
    with pytest.raises(StoreError, match=r"another frontload version \(store schema 0.*--rebuild"):
        ingest(study_ws, progress=False)
    assert ingest(study_ws, progress=False, rebuild=True).new_rows["metrics"] == 3 * sum(STEPS.values())


def test_filter_drops_account_for_every_dropped_record(study_ws):
    ingest(study_ws, progress=False)
    per_step = query(
        study_ws, "SELECT step_name, inputs, kept, sum(records) AS dropped FROM filter_drops GROUP BY ALL"
    )
    assert per_step.height == 2 * 4
    assert (per_step["inputs"] == per_step["kept"] + per_step["dropped"]).all()
    # The pipelines' drops per corpus equal the drop account its manifest carries.
    sql = """
        SELECT c.name, sum(d.records) AS from_events,
               any_value(c.inputs - c.kept) AS from_manifest
        FROM filter_drops d JOIN corpora c ON d.run_path LIKE c.path || '/%'
        GROUP BY c.name
    """
    rows = query(study_ws, sql)
    assert rows.height == 4 and (rows["from_events"] == rows["from_manifest"]).all()
