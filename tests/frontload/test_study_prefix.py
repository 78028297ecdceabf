"""Shared pretraining prefixes: trained once, branched, and bitwise equal to training every arm alone."""

import json
import re
import shutil
from pathlib import Path

import pytest

from frontload.runner import build_plan, run_study
from frontload.study_file import load_study

STUDY = Path(__file__).with_name("prefix_study.toml")
LATE = "plain@late=0.5"  # the study's one sweep arm


def _study(tmp_path: Path, edit=None, name="study.toml"):
    text = STUDY.read_text()
    if edit:
        text = edit(text)
    path = tmp_path / name
    path.write_text(text)
    study = load_study(path)
    study.study.workspace = str(tmp_path / "ws")
    return study


def _unshared(text: str) -> str:
    return text.replace("seed = 3\n", "seed = 3\nshare_prefixes = false\n", 1)


def _metrics(run_dir: Path) -> dict[int, tuple]:
    lines = (run_dir / "events" / "metrics.rank0.jsonl").read_text().splitlines()
    return {m["step"]: (m["loss"], m["lr"], m["grad_norm"], m["consumed_samples"]) for m in map(json.loads, lines)}


def _trained(ws: Path, arm: str) -> tuple[dict[int, tuple], dict[str, bytes], dict]:
    """An arm's whole pretraining curve (through the prefixes it continues from) and final weights."""
    (run,) = (ws / "runs" / arm / "seed-3" / "pretrain").iterdir()
    info = json.loads((run / "config.json").read_text())
    curve = _metrics(run)
    parent = info["parent"]
    while parent:  # a checkpoint: <run>/checkpoints/step_N
        outer = Path(parent).parents[1]
        curve = {**_metrics(outer), **curve}
        parent = json.loads((outer / "config.json").read_text())["parent"]
    final = Path((run / "DONE").read_text().strip())
    return curve, {p.name: p.read_bytes() for p in final.glob("model_*.pt")}, info


@pytest.mark.slow
def test_shared_prefix_trains_once_and_equals_training_each_arm_alone(tmp_path, capsys):
    ws = tmp_path / "ws"
    arms = ("plain", "mixed", LATE)
    assert run_study(_study(tmp_path, _unshared), report=False) == 0
    alone = {arm: _trained(ws, arm) for arm in arms}
    shutil.move(ws / "runs", tmp_path / "runs-alone")  # the data steps stay and are reused

    capsys.readouterr()
    assert run_study(_study(tmp_path), report=False) == 0
    out = capsys.readouterr().out
    assert re.search(r"pretrain-prefix:2:s3 +run", out) and re.search(r"shards:web +reuse", out)
    branch_at = {"plain": 5, LATE: 5, "mixed": 3}  # plain and its sweep arm share stage 1 too
    for arm in arms:
        curve, weights, info = _trained(ws, arm)
        assert sorted(curve) == list(range(1, 8))
        assert curve == alone[arm][0]  # loss, lr, grad norm and samples of every step, bit for bit
        assert weights and weights == alone[arm][1]
        # The branch records the prefix's last checkpoint as its parent and starts after it.
        assert re.search(rf"runs/_shared/seed-3/pretrain/\w+/checkpoints/step_0*{branch_at[arm]}$", info["parent"])
        assert info["seed"] == 3 and info["arm"] == arm
        sweep = {"template": "plain", "axes": {"late": 0.5}, "keys": {"late": "pretrain[2].blend.problems"}}
        assert info["sweep"] == (sweep if arm == LATE else None)
        assert min(_metrics(Path(info["config"]["run_dir"]))) == branch_at[arm] + 1
    # Steps trained: 3 (all arms) + 2 (plain, late) + 2 + 2 + 4, against 7 per arm alone.
    trained = sum(len(_metrics(run)) for run in (ws / "runs").glob("*/seed-3/pretrain/*"))
    alone_steps = sum(len(c) for c, _, _ in alone.values())
    assert (trained, alone_steps) == (13, 21)
    print(f"\npretraining steps: {trained} with shared prefixes, {alone_steps} without")


def test_dry_run_shows_the_tree(tmp_path, capsys):
    study = _study(tmp_path, lambda t: t.replace("seed = 3\n", "seed = 3\nseeds = [3, 4]\n", 1))
    assert run_study(study, dry_run=True) == 0
    out = capsys.readouterr().out
    for s in (3, 4):
        tree = [
            f"pretrain-prefix:1:s{s}  stage 0 (14 samples): steps 1-3 of the phase's 7, trained once",
            f"  ├─ pretrain-prefix:2:s{s}  stages 0-1 (22 samples): steps 4-5 of the phase's 7, trained once",
            f"  │    ├─ pretrain:plain:s{s}  continues at step 6",
            f"  │    └─ pretrain:{LATE}:s{s}  continues at step 6",
            f"  └─ pretrain:mixed:s{s}  continues at step 4",
        ]
        assert "\n".join(tree) in out
    plan = build_plan(_study(tmp_path))
    assert plan["pretrain:mixed:s3"].deps[0] == "pretrain-prefix:1:s3"
    assert plan[f"pretrain:{LATE}:s3"].deps[0] == "pretrain-prefix:2:s3"
    assert plan["pretrain-prefix:2:s3"].deps == ["pretrain-prefix:1:s3", "shards:web"]
    assert plan["pretrain-prefix:1:s3"].deps == ["shards:web"]  # not the branches' later shard sets


def test_prefix_fingerprint_covers_what_determines_its_state(tmp_path):
    def prefix_fp(edit=None) -> str:
        return build_plan(_study(tmp_path, edit))["pretrain-prefix:1:s3"].fingerprint

    base = prefix_fp()
    # A later stage of one arm changes nothing before the branch point ...
    assert prefix_fp(lambda t: t.replace("web = 0.5, problems = 0.5", "web = 0.25, problems = 0.75")) == base
    # ... but the schedule's length, the optimizer, the model and the shared stage do.
    for old, new in [
        ("samples = 8", "samples = 12"),
        ("lr = 3e-3", "lr = 1e-3"),
        ("layers = 2", "layers = 3"),
        ("samples = 14", "samples = 15"),
    ]:
        assert prefix_fp(lambda t, old=old, new=new: t.replace(old, new)) != base, old


def _alone(plan) -> set[str]:
    return {s.id.split(":")[1] for s in plan.ordered() if s.kind == "pretrain" and s.deps[0].startswith("shards:")}


@pytest.mark.parametrize(
    ("edit", "alone", "why"),
    [
        # Different total tokens: the learning-rate schedule differs before the branch point.
        (
            lambda t: t.replace("{ samples = 8, blend = { web = 0.5", "{ samples = 12, blend = { web = 0.5"),
            {"mixed"},
            r"not shared across totals \(plain: 7 steps, plain@late=0.5: 7 steps, mixed: 8 steps\): the learning-rate schedule",
        ),
        # A different first stage: nothing before the branch point is common.
        (
            lambda t: t.replace(
                "{ samples = 14, blend = { web = 1.0 } }, { samples = 8, blend = { web = 0.5",
                "{ samples = 14, blend = { web = 0.9, problems = 0.1 } }, { samples = 8, blend = { web = 0.5",
            ),
            {"mixed"},
            None,
        ),
        (
            lambda t: t.replace("samples = 14", "epochs = 0.01"),
            {"plain", "mixed", LATE},
            r"not shared \(plain, plain@late=0.5, mixed\): a stage's budget is in epochs",
        ),
        # Stage 0 holds no whole batch: only the arms that also agree on stage 1 share.
        (
            lambda t: t.replace("samples = 14", "samples = 3"),
            {"mixed"},
            r"not shared \(plain, plain@late=0.5, mixed\): stage 0 holds fewer samples than one global batch",
        ),
        (_unshared, {"plain", "mixed", LATE}, r"no shared pretraining prefixes: \[study\] share_prefixes = false"),
    ],
)
def test_sharing_is_refused_when_anything_before_the_branch_differs(tmp_path, capsys, edit, alone, why):
    study = _study(tmp_path, edit)
    plan = build_plan(study)
    assert _alone(plan) == alone
    shared = {a for g in plan.prefixes for a in g.arms}
    assert not shared & alone and shared | alone == {"plain", "mixed", LATE}
    run_study(study, dry_run=True)
    if why is not None:
        assert re.search(why, capsys.readouterr().out)
