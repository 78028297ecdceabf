"""The study runner's plan: what reruns when a setting changes, and how bad study files are reported."""

import json
import re
import shutil
from pathlib import Path

import pytest

from frontload.core.errors import FrontloadError
from frontload.runner import DONE, build_plan
from frontload.study_file import load_study

TINY = Path(__file__).with_name("tiny_study.toml")


def _study(tmp_path: Path, edit=None):
    text = TINY.read_text()
    if edit:
        text = edit(text)
    path = tmp_path / "study.toml"
    path.write_text(text)
    study = load_study(path)
    study.study.workspace = str(tmp_path / "ws")
    return study


def _mark_all_done(plan) -> None:
    for step in plan.ordered():
        step.output.mkdir(parents=True, exist_ok=True)
        if not step.atomic:
            (step.output / DONE).write_text("x\n")


def _to_run(tmp_path, edit) -> set[str]:
    study = _study(tmp_path, edit)
    return {s.id for s in build_plan(study).ordered() if s.status() != "reuse"}


def test_every_step_is_planned_in_dependency_order(tmp_path):
    plan = build_plan(_study(tmp_path))
    ids = [s.id for s in plan.ordered()]
    for i, step in enumerate(plan.ordered()):
        for dep in step.deps:
            assert ids.index(dep) < i, f"{step.id} runs before its input {dep}"
    for arm in ("baseline", "front_loaded"):
        for phase in ("pretrain", "sft", "rl"):
            assert f"{phase}:{arm}:s7" in ids and f"eval:{arm}:{phase}:s7" in ids
    # SFT reads SFT shards (with loss masks), pretraining reads plain ones.
    assert "shards:hq:sft" in ids and "shards:web" in ids and "shards:reasoning" in ids


def test_every_evaluation_waits_for_the_perplexity_shards_whichever_arm_reads_them(tmp_path):
    # Only the second arm pretrains on `reasoning`; the first arm's evaluations read its shard set too,
    # so on a cluster, where arms run side by side, they must wait for it.
    study = _study(
        tmp_path,
        lambda t: t.replace(
            "max_new_tokens = 24\ntasks", 'max_new_tokens = 24\nperplexity_on = ["reasoning", "hq"]\ntasks'
        ),
    )
    plan = build_plan(study)
    ids = [s.id for s in plan.ordered()]
    assert plan.perplexity == ["shards:reasoning"]  # hq has SFT shards only: no perplexity set
    for step in plan.ordered():
        if step.kind == "eval":
            assert "shards:reasoning" in step.deps and ids.index("shards:reasoning") < ids.index(step.id)


def test_changing_only_sft_reuses_corpora_shards_and_pretraining(tmp_path):
    _mark_all_done(build_plan(_study(tmp_path)))
    rerun = _to_run(tmp_path, lambda t: t.replace("optim = { lr = 1e-3 }", "optim = { lr = 5e-4 }"))
    assert rerun == {
        "sft:baseline:s7",
        "sft:front_loaded:s7",
        "rl:baseline:s7",
        "rl:front_loaded:s7",
        "eval:baseline:sft:s7",
        "eval:front_loaded:sft:s7",
        "eval:baseline:rl:s7",
        "eval:front_loaded:rl:s7",
    }


def test_changing_the_tokenizer_rebuilds_everything_after_it(tmp_path):
    _mark_all_done(build_plan(_study(tmp_path)))
    rerun = _to_run(tmp_path, lambda t: t.replace("vocab_size = 600", "vocab_size = 700"))
    assert not any(s.startswith(("corpus:", "task:")) for s in rerun)
    assert {"tokenizer", "shards:web", "shards:reasoning", "shards:hq:sft"} <= rerun
    assert all(f"{p}:{a}:s7" in rerun for p in ("pretrain", "sft", "rl") for a in ("baseline", "front_loaded"))


def test_changing_one_arm_leaves_the_other_alone(tmp_path):
    _mark_all_done(build_plan(_study(tmp_path)))
    rerun = _to_run(tmp_path, lambda t: t.replace("web = 0.5, reasoning = 0.5", "web = 0.7, reasoning = 0.3"))
    assert rerun and all("front_loaded" in s for s in rerun)


def test_a_killed_data_step_is_rebuilt_and_a_killed_training_step_resumes(tmp_path):
    plan = build_plan(_study(tmp_path))
    corpus = plan["corpus:web"]
    corpus.output.with_name(corpus.output.name + ".partial").mkdir(parents=True)
    assert corpus.status() == "resume" and not corpus.done()
    pre = plan["pretrain:baseline:s7"]
    pre.output.mkdir(parents=True)
    assert pre.status() == "resume"
    (pre.output / DONE).write_text("ckpt\n")
    assert pre.status() == "reuse"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("hidden = 64", "hiden = 64"), r"study\.toml: \[model\]\.hiden: unknown key"),
        (
            lambda t: t.replace("vocab_size = 600", 'vocab_size = "big"'),
            r"\[tokenizer\]\.vocab_size: expected an integer",
        ),
        (
            lambda t: t.replace("blend = { hq = 1.0 } }\nrl", "blend = { hqq = 1.0 } }\nrl", 1),
            r"\[\[arms\]\]\[0\] \(baseline\)\.sft\.blend\.hqq: unknown corpus 'hqq'",
        ),
        (
            lambda t: t.replace("web = 0.5, reasoning = 0.5", "web = 0.0, reasoning = 0.0"),
            r"\[\[arms\]\]\[1\]\.pretrain\[1\]\.blend: all weights are zero",
        ),
        (lambda t: t + "\n[extra]\nx = 1\n", r"\[extra\]: unknown table"),
        (
            lambda t: t.replace("optim = { lr = 3e-3 }", "optim = { lrr = 3e-3 }"),
            r"\[pretrain\]\.optim\.lrr: unknown key",
        ),
        (lambda t: t.replace("[rl]\n", "[rl]\nrun_dir = 'x'\n"), r"\[rl\]\.run_dir: is set by the study runner"),
        (lambda t: t.replace("seed = 7\n", "seed = 7\nseeds = []\n", 1), r"\[study\]\.seeds: name at least one seed"),
        (
            lambda t: t.replace("seed = 7\n", "seed = 7\nseeds = [1, 1]\n", 1),
            r"\[study\]\.seeds: seeds must be distinct",
        ),
        (
            lambda t: t.replace("[pretrain]\n", "[pretrain]\nstop_at = 3\n"),
            r"\[pretrain\]\.stop_at: is set by the study runner",
        ),
    ],
)
def test_bad_study_files_name_file_table_and_key(tmp_path, edit, message):
    with pytest.raises(FrontloadError, match=message):
        _study(tmp_path, edit)


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    from frontload.runner import run_study

    study = _study(tmp_path)
    assert run_study(study, dry_run=True) == 0
    out = capsys.readouterr().out
    assert re.search(r"run\s+pretrain:front_loaded:s7", out)
    assert not (tmp_path / "ws").exists()


def test_slurm_dry_run_writes_chained_job_scripts(tmp_path):
    from frontload.jobs import write_job_scripts

    study = _study(tmp_path)
    plan = build_plan(study)
    write_job_scripts(study, executor="slurm", submit=False)
    jobs = tmp_path / "ws" / "jobs"
    submit = (jobs / "submit.sh").read_text()
    scripts = sorted(jobs.glob("*.sbatch"))
    assert len(scripts) == len(plan.steps)
    pre = next(p for p in scripts if "pretrain-front_loaded-s7" in p.name).read_text()
    assert "#SBATCH --gpus-per-node=" in pre and "torchrun" in pre and "--only pretrain:front_loaded:s7" in pre
    data = next(p for p in scripts if "corpus-web" in p.name).read_text()
    assert "--data-executor slurm" in data and "torchrun" not in data
    # SFT waits for its pretraining job and its shard set.
    sft_line = next(line for line in submit.splitlines() if "sft-front_loaded" in line)
    assert "--dependency=afterok:" in sft_line
    shutil.rmtree(jobs)


def test_seeds_repeat_training_and_evaluation_but_not_data(tmp_path, capsys):
    from frontload.runner import run_study

    one = build_plan(_study(tmp_path))
    two = build_plan(_study(tmp_path, lambda t: t.replace("seed = 7\n", "seed = 7\nseeds = [1, 2]\n", 1)))
    kinds = ("pretrain-prefix", "pretrain", "sft", "rl", "eval")

    def split(plan):
        runs = {s.id: s for s in plan.ordered() if s.kind in kinds}
        data = {s.id: s.fingerprint for s in plan.ordered() if s.kind not in kinds}
        return runs, data

    runs1, data1 = split(one)
    runs2, data2 = split(two)
    assert data1 == data2  # corpora, tokenizer, tasks and shards are built once, with the data seed
    assert len(runs2) == 2 * len(runs1)
    for step_id, step in runs2.items():
        kind, arm, *rest, s = step_id.split(":")
        other = runs2[":".join([kind, arm, *rest, "s2" if s == "s1" else "s1"])]
        assert step.fingerprint != other.fingerprint and step.output != other.output
        assert f"seed-{s[1:]}" in step.output.parts and step.seed == int(s[1:])
    # SFT of seed 2 continues seed 2's pretraining.
    assert two["sft:baseline:s2"].deps[0] == "pretrain:baseline:s2"
    assert (
        run_study(_study(tmp_path, lambda t: t.replace("seed = 7\n", "seed = 7\nseeds = [1, 2]\n", 1)), dry_run=True)
        == 0
    )
    out = capsys.readouterr().out
    assert "training seeds: 1, 2" in out and re.search(
        r"run\s+eval:front_loaded:rl:s2\s+runs/front_loaded/seed-2/eval-rl/", out
    )


def test_workspace_paths_read_back_arm_seed_and_phase():
    from frontload.core.workspace import Workspace, parse_run

    ws = Workspace(Path("ws"))
    run = parse_run(ws.run("front_loaded@share=0.1", "sft", "abc", seed=3).relative_to("ws") / "checkpoints" / "x")
    assert (run.arm, run.seed, run.phase, run.evaluation, run.fingerprint) == (
        "front_loaded@share=0.1",
        3,
        "sft",
        False,
        "abc",
    )
    ev = parse_run(ws.eval_run("a", "rl", "f", seed=1).relative_to("ws"))
    assert (ev.arm, ev.seed, ev.phase, ev.evaluation) == ("a", 1, "rl", True)
    shared = parse_run(ws.shared_run("pretrain", "f", seed=2).relative_to("ws"))
    assert shared.shared and shared.arm is None and shared.seed == 2 and shared.phase == "pretrain"
    assert parse_run("runs/a/pretrain/f") is None  # the layout before seeds is not misread
    assert parse_run("corpora/web/f") is None


def test_an_eval_task_can_hold_its_surface_forms_to_the_first_templates(tmp_path):
    # The taught task is asked in the phrasing SFT used; a second task asks it in every phrasing.
    def edit(text):
        return text.replace(
            'tasks = [ { name = "heldout", families = ["arithmetic"], n = 8, difficulty = [1, 2], seed = 99 } ]',
            'tasks = [ { name = "heldout", families = ["chain_add"], n = 40, difficulty = [1, 2], seed = 99, '
            'templates = 1 },\n          { name = "forms", families = ["chain_add"], n = 40, difficulty = [1, 2], seed = 99 } ]',
        )

    plan = build_plan(_study(tmp_path, edit))
    questions = {}
    for name in ("heldout", "forms"):
        step = plan[f"task:{name}"]
        step.output.mkdir(parents=True)
        step.action(step.output)
        questions[name] = [json.loads(line)["question"] for line in (step.output / "task.jsonl").open()]
    assert all(q.startswith("Compute ") for q in questions["heldout"])
    assert not all(q.startswith("Compute ") for q in questions["forms"])


SHIPPED = sorted((Path(__file__).parents[2] / "frontload" / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_study_plans_and_its_arms_share_one_pretraining_budget(path, tmp_path):
    study = load_study(path)
    study.study.workspace = str(tmp_path / "ws")
    ids = [s.id for s in build_plan(study).ordered()]
    assert all(any(i.startswith(f"sft:{arm.name}:s") for i in ids) for arm in study.arms)

    def tokens(stage) -> float:
        return stage.tokens if stage.tokens is not None else sum(stage.source_tokens.values())

    budgets = {arm.name: sum(tokens(s) for s in arm.pretrain) for arm in study.arms}
    assert len(set(budgets.values())) == 1, budgets  # arms differ in what they see, not how much


def test_threads_pin_torch_and_what_the_run_starts(tmp_path, monkeypatch):
    import os

    import torch

    from frontload.runner import _pin_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    try:
        _pin_threads(1)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    with pytest.raises(FrontloadError, match=r"\[study\]\.threads: must be at least 1"):
        _study(tmp_path, lambda t: t.replace("seed = 7\n", "seed = 7\nthreads = 0\n", 1))
