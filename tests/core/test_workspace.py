"""The workspace layout: the runner's paths and analysis's reading of them agree, in one module."""

from pathlib import Path

import pytest

from frontload.core.workspace import RunPath, Workspace, data_name, parse_mix_plan, parse_run


def test_run_and_eval_folders_read_back_their_arm_and_phase(tmp_path):
    ws = Workspace(tmp_path / "ws")
    run = ws.run("front_loaded", "sft", "abc123", seed=2)
    ev = ws.eval_run("front_loaded", "sft", "def456", seed=2)
    assert run.relative_to(ws.root).as_posix() == "runs/front_loaded/seed-2/sft/abc123"
    assert ev.relative_to(ws.root).as_posix() == "runs/front_loaded/seed-2/eval-sft/def456"
    assert parse_run(run.relative_to(ws.root)) == RunPath(
        arm="front_loaded", seed=2, phase="sft", evaluation=False, fingerprint="abc123"
    )
    assert parse_run(ev.relative_to(ws.root)) == RunPath(
        arm="front_loaded", seed=2, phase="sft", evaluation=True, fingerprint="def456"
    )
    # A file below a run folder still belongs to it; folders outside runs/ belong to no run.
    assert parse_run("runs/a/seed-1/pretrain/fp/checkpoints/step_00000010").arm == "a"
    assert parse_run("runs/a/seed-1/pretrain") is None
    assert parse_run(ws.corpus("web", "fp").relative_to(ws.root)) is None


@pytest.mark.parametrize(
    ("rel", "expected"),
    [("mix/baseline/pretrain/plan.json", ("baseline", "pretrain")), ("mix/plan.json", None), ("runs/a/b/c", None)],
)
def test_mix_plan_paths(rel, expected):
    assert parse_mix_plan(rel) == expected


def test_data_outputs_are_named_by_the_folder_above_their_fingerprint(tmp_path):
    ws = Workspace(tmp_path)
    assert data_name(ws.corpus("web", "fp1"), "fp1") == "web"
    assert data_name(ws.shards("hq", "fp2", sft=True), "fp2") == "hq-sft"
    assert data_name(Path("/somewhere/my_corpus"), "fp3") == "my_corpus"  # built by hand, outside the layout


def test_the_runner_and_the_store_use_the_same_layout(tmp_path):
    from frontload.analysis.store import DB_NAME, db_path

    ws = Workspace(tmp_path)
    assert ws.db == db_path(tmp_path) and ws.db.name == DB_NAME
