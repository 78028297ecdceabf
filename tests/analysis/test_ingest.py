"""Ingest: the persistence answer by hand, idempotence, incremental loads, torn and corrupt files, versions."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import duckdb
import pytest
from conftest import N_QUESTIONS, NLL_GAIN, REASONING_SHARE, SEEDS, STEPS, question_values, write_study

from frontload.analysis import ingest, query
from frontload.analysis.ingest import IngestError
from frontload.analysis.stats import BOOTSTRAP_SEED, RESAMPLES, bootstrap, paired_gains, verdict
from frontload.analysis.store import StoreError
from frontload.cli import main
from frontload.core.events import RunFolder
from frontload.core.phases import PHASES

COUNTED = ("runs", "checkpoints", "corpora", "shards", "mix_plan", "metrics", "evals", "predictions", "rollouts")


def _counts(ws) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in COUNTED)
    return dict(query(ws, sql).iter_rows())


def _metrics_file(ws, arm="front_loaded", phase="pretrain"):
    run_dir = min((ws / "runs" / arm / phase).iterdir())  # one run per seed: take one
    return run_dir, run_dir / "events" / "metrics.rank0.jsonl"


def test_persistence_from_the_command_line_matches_hand_computed_gains(study_ws, capsys):
    assert main(["analysis", "ingest", str(study_ws), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sql", "SELECT * FROM persistence", "--workspace", str(study_ws), "--format", "json"]) == 0
    rows = {(r["arm"], r["task"], r["metric"], r["phase"]): r for r in json.loads(capsys.readouterr().out)}
    # By hand from conftest.SCORES / PERPLEXITY: arm score minus baseline score after each phase.
    expected = {
        ("front_loaded", "heldout_arithmetic"): (0.18 - 0.10, 0.38 - 0.30, 0.55 - 0.45),
        ("front_loaded", "heldout_word_problems"): (0.09 - 0.05, 0.26 - 0.20, 0.29 - 0.30),
        ("front_loaded_more", "heldout_arithmetic"): (0.22 - 0.10, 0.41 - 0.30, 0.60 - 0.45),
        ("front_loaded_more", "heldout_word_problems"): (0.12 - 0.05, 0.27 - 0.20, 0.36 - 0.30),
    }
    for (arm, task), gains in expected.items():
        by_phase = []
        for phase, gain in zip(PHASES, gains):
            row = rows[(arm, task, "pass@1", phase)]
            assert row["baseline_arm"] == "baseline" and row["n_seeds"] == 2 and row["n_questions"] == N_QUESTIONS
            assert row["gain"] == pytest.approx(gain)
            # The interval is the hierarchical bootstrap of the paired per-question gains of both seeds.
            paired = paired_gains(
                {s: question_values(arm, s, phase, task, "pass@1") for s in SEEDS},
                {s: question_values("baseline", s, phase, task, "pass@1") for s in SEEDS},
                "pass@1",
            )
            iv = bootstrap(paired, resamples=RESAMPLES, seed=BOOTSTRAP_SEED)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((iv.low, iv.high))
            assert row["ci_low"] <= row["gain"] <= row["ci_high"]
            by_phase.append(iv)
        assert {rows[(arm, task, "pass@1", p)]["verdict"] for p in PHASES} == {verdict(by_phase)}
    # answer_nll: lower is better, so the gain is baseline minus arm; each verdict as the fixture built it.
    verdicts = {"persists", "washed_out", "emerges", "hurts"}
    for (arm, task), nll_gains in NLL_GAIN.items():
        for phase, gain in zip(PHASES, nll_gains):
            row = rows[(arm, task, "answer_nll", phase)]
            assert row["gain"] == pytest.approx(gain, abs=0.01)
        want = {(0.3, 0.3, 0.3): "persists", (0.3, 0.0, 0.0): "washed_out", (0.0, 0.3, 0.3): "emerges"}
        assert row["verdict"] == want.get(nll_gains, "hurts")
        verdicts.discard(row["verdict"])
    assert not verdicts
    # Perplexity has no per-question scores: the gain of the two scores, no interval, no verdict.
    row = rows[("front_loaded", "heldout_text", "perplexity", "pretrain")]
    assert row["gain"] == pytest.approx(12.0 - 11.5) and row["ci_low"] is None and row["verdict"] is None
    assert rows[("front_loaded_more", "heldout_text", "perplexity", "pretrain")]["gain"] == pytest.approx(12.0 - 12.5)
    assert not any(arm == "baseline" for arm, *_ in rows)
    # pass@k is reported under its k.
    assert rows[("front_loaded", "heldout_arithmetic", "pass@2", "rl")]["gain"] == pytest.approx(1.5 * (0.55 - 0.45))


def test_seeds_reach_every_table_and_power_and_ablation_intervals(study_ws):
    ingest(study_ws, progress=False)
    for table in (
        "runs",
        "evals",
        "question_scores",
        "metrics",
        "predictions",
        "rollouts",
        "phases",
        "scores_by_seed",
    ):
        # Data stages (corpora, shards) are shared by every seed and carry the study seed.
        arms = (
            "arm IS NOT NULL"
            if table in ("runs", "phases", "scores_by_seed")
            else "run_id IN (SELECT run_id FROM runs)"
        )
        seeds = query(study_ws, f"SELECT DISTINCT seed FROM {table} WHERE {arms} ORDER BY seed")["seed"]
        assert seeds.to_list() == list(SEEDS), table
    ab = query(study_ws, "SELECT * FROM ablation WHERE metric = 'pass@1' AND arm = 'front_loaded' AND phase = 'sft'")
    row = ab.filter(ab["task"] == "heldout_arithmetic").row(0, named=True)
    assert row["value"] == pytest.approx(0.38) and row["mean"] == pytest.approx(0.38)
    assert row["ci_low"] < 0.38 < row["ci_high"] and row["n_seeds"] == 2 and row["n_questions"] == N_QUESTIONS
    power = query(study_ws, "SELECT * FROM power WHERE metric = 'answer_nll'")
    assert power.height == 2 * 2 * 3
    varies = power.filter(power["se"] > 0)
    assert varies.height == 7
    # Two seeds: the half width plus Student's t power quantile on one degree of freedom, 1 + 1.376 / 12.706.
    assert set(varies["n_seeds"].to_list()) == {2}
    expected = 1.10832 * varies["half_width"]
    assert varies["min_detectable_gain"].to_list() == pytest.approx(expected.to_list(), rel=1e-4)
    # Identical scores on every question (as on a floor where both arms get 0): the gains never vary, and
    # the view does not claim any gain would be detected.
    zero = power.filter((power["arm"] == "front_loaded_more") & (power["phase"] == "pretrain"))
    assert zero["se"].to_list() == [0.0, 0.0] and zero["min_detectable_gain"].to_list() == [None, None]


def test_runs_without_a_seed_take_the_study_seed(tmp_path):
    ws = tmp_path / "ws"
    write_study(ws, arms=("baseline", "front_loaded"), seeds=(1,))
    for config in ws.glob("runs/*/*/*/config.json"):
        info = json.loads(config.read_text())
        info.pop("seed")
        config.write_text(json.dumps(info))
    ingest(ws, progress=False)
    assert query(ws, "SELECT DISTINCT seed FROM runs")["seed"].to_list() == [1234]  # study.json study.seed
    assert query(ws, "SELECT DISTINCT seed FROM question_scores")["seed"].to_list() == [1234]
    verdicts = query(ws, "SELECT DISTINCT verdict FROM persistence WHERE metric = 'answer_nll'")["verdict"]
    assert sorted(verdicts.to_list()) == ["persists", "washed_out"]


def test_intervals_follow_the_bootstrap_settings(study_ws):
    ingest(study_ws, progress=False, resamples=200, bootstrap_seed=5)
    sql = "SELECT ci_low FROM gain_intervals ORDER BY ALL"
    first = query(study_ws, sql)["ci_low"].to_list()
    assert query(study_ws, "SELECT resamples, bootstrap_seed FROM store_info").row(0) == (200, 5)
    ingest(study_ws, progress=False, resamples=200, bootstrap_seed=5)
    assert query(study_ws, sql)["ci_low"].to_list() == first  # deterministic
    ingest(study_ws, progress=False, resamples=200, bootstrap_seed=6)
    assert query(study_ws, sql)["ci_low"].to_list() != first  # recomputed with the new seed


def test_a_store_made_by_an_older_interval_method_is_recomputed(study_ws, monkeypatch):
    # Upgrading frontload must not leave a workspace's intervals as an older method computed them.
    from frontload.analysis import stats

    ingest(study_ws, progress=False)
    sql = "SELECT arm, task, metric, phase, ci_low, ci_high FROM gain_intervals ORDER BY ALL"
    before = query(study_ws, sql).rows()
    monkeypatch.setattr(stats, "METHOD_VERSION", stats.METHOD_VERSION + 1)
    real = stats.bootstrap
    monkeypatch.setattr(stats, "bootstrap", lambda *a, **k: real(*a, **{**k, "level": 0.5}))
    ingest(study_ws, progress=False)
    after = query(study_ws, sql).rows()
    assert len(after) == len(before) and after != before  # recomputed, here with the narrower 50% level
    ingest(study_ws, progress=False)
    assert query(study_ws, sql).rows() == after  # and only once


def test_sweep_view_reads_the_arms_sweep_axes(tmp_path):
    ws = write_study(tmp_path / "ws")
    study = json.loads((ws / "study.json").read_text())
    for arm in study["arms"]:
        if arm["name"] != "baseline":
            arm["sweep"] = {"name": "share", "axes": {"reasoning_share": REASONING_SHARE[arm["name"]]}}
    (ws / "study.json").write_text(json.dumps(study))
    ingest(ws, progress=False)
    sw = query(
        ws,
        "SELECT value_num, arm, gain, ci_low, ci_high FROM sweep "
        "WHERE task = 'heldout_arithmetic' AND metric = 'pass@1' AND phase = 'rl' ORDER BY value_num",
    )
    assert sw["value_num"].to_list() == [0.2, 0.4] and sw["arm"].to_list() == ["front_loaded", "front_loaded_more"]
    assert sw["gain"].to_list() == pytest.approx([0.55 - 0.45, 0.60 - 0.45])
    assert (sw["ci_low"] <= sw["gain"]).all() and (sw["gain"] <= sw["ci_high"]).all()
    assert query(ws, "SELECT DISTINCT sweep, axis FROM sweep").rows() == [("share", "reasoning_share")]
    from frontload.analysis import report

    assert report(ws, echo=False, ingest_first=False).plots["sweep"].stat().st_size > 10_000


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
    assert counts["metrics"] == 3 * len(SEEDS) * sum(STEPS.values())
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
        study_ws,
        f"SELECT lines, rows_added FROM ingest_files WHERE path LIKE '%{run_dir.name}/events/metrics%'",
    )
    assert files.row(0) == (STEPS["pretrain"] + 5, STEPS["pretrain"] + 5)


def test_torn_last_line_is_reported_then_completed_without_duplicates(study_ws):
    run_dir, path = _metrics_file(study_ws)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"v": 1, "run_id": "x", "seq": 999, "step": 9')  # the writer was killed mid-line
    report = ingest(study_ws, progress=False)
    assert any(str(path.relative_to(study_ws)) in w and "after the last complete line" in w for w in report.warnings)
    assert report.new_rows["metrics"] == 3 * len(SEEDS) * sum(STEPS.values())
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
    assert (
        query(study_ws, "SELECT count(*) FROM metrics").item()
        == 3 * len(SEEDS) * sum(STEPS.values()) - STEPS["pretrain"]
    )


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
    late = max((study_ws / "runs" / "front_loaded_more" / "eval-rl").iterdir())
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
    ckpt = min(p for p in (study_ws / "runs" / "front_loaded" / "rl").glob("*/checkpoints/*") if p.name.endswith("30"))
    seed = json.loads((ckpt.parents[1] / "config.json").read_text())["seed"]
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
    # The evaluation names no seed: it belongs to the seed of the run that wrote its checkpoint.
    got = query(
        study_ws.name,
        "SELECT seed, value, checkpoint FROM scores_by_seed WHERE arm = 'front_loaded' AND phase = 'rl' "
        "AND task = 'heldout_arithmetic' AND metric = 'pass@1' ORDER BY value DESC",
    )
    assert got.rows() == [(seed, 0.99, str(ckpt.relative_to(study_ws))), (3 - seed, 0.55, got["checkpoint"][1])]


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
    assert ingest(study_ws, progress=False).new_rows["metrics"] == 3 * len(SEEDS) * sum(STEPS.values())
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
    assert ingest(study_ws, progress=False, rebuild=True).new_rows["metrics"] == 3 * len(SEEDS) * sum(STEPS.values())


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
