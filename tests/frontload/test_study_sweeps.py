"""Sweeps: one arm template expanded over the values of one or two keys into named arms."""

import json
import re
from pathlib import Path

import pytest

from frontload.core.config import NAME_PATTERN
from frontload.core.errors import FrontloadError
from frontload.runner import build_plan, run_study
from frontload.study_file import load_study

TINY = Path(__file__).with_name("tiny_study.toml")

SHARE = """
[[sweeps]]
arm = "front_loaded"
axes = { share = { key = "pretrain[1].blend.reasoning", values = [0.05, 0.1, 0.25] } }
"""

GRID = """
[[sweeps]]
arm = "front_loaded"
zip = {zip}
keep_template = false
[sweeps.axes.share]
key = "pretrain[1].blend.reasoning"
values = [0.1, 0.3]
[sweeps.axes.web]
key = "pretrain[1].blend.web"
values = [0.9, 0.7]
"""


def _study(tmp_path: Path, extra: str, edit=None):
    text = TINY.read_text() + extra
    if edit:
        text = edit(text)
    path = tmp_path / "study.toml"
    path.write_text(text)
    study = load_study(path)
    study.study.workspace = str(tmp_path / "ws")
    return study


def test_one_axis_expands_into_named_arms_after_the_template(tmp_path):
    study = _study(tmp_path, SHARE)
    names = [a.name for a in study.arms]
    assert names == [
        "baseline",
        "front_loaded",
        "front_loaded@share=0.05",
        "front_loaded@share=0.1",
        "front_loaded@share=0.25",
    ]
    assert all(re.fullmatch(NAME_PATTERN, n) for n in names)
    arm = study.arms[3]
    assert arm.pretrain[1].blend == {"web": 0.5, "reasoning": 0.1}
    assert arm.pretrain[0].blend == {"web": 1.0} and arm.sft == study.arms[1].sft  # the rest is the template's
    assert arm.sweep == {
        "template": "front_loaded",
        "axes": {"share": 0.1},
        "keys": {"share": "pretrain[1].blend.reasoning"},
    }
    assert study.arms[1].sweep is None and study.arms[1].pretrain[1].blend["reasoning"] == 0.5


@pytest.mark.parametrize("zipped", [False, True])
def test_two_axes_make_a_grid_or_vary_together(tmp_path, zipped):
    study = _study(tmp_path, GRID.format(zip=str(zipped).lower()))
    swept = {a.name: a.pretrain[1].blend for a in study.arms if a.sweep}
    if zipped:  # keeps the blend summing to one
        assert swept == {
            "front_loaded@share=0.1@web=0.9": {"web": 0.9, "reasoning": 0.1},
            "front_loaded@share=0.3@web=0.7": {"web": 0.7, "reasoning": 0.3},
        }
    else:
        assert list(swept) == [
            "front_loaded@share=0.1@web=0.9",
            "front_loaded@share=0.1@web=0.7",
            "front_loaded@share=0.3@web=0.9",
            "front_loaded@share=0.3@web=0.7",
        ]
    assert "front_loaded" not in [a.name for a in study.arms]  # keep_template = false


def test_sweep_arms_are_planned_recorded_and_shown_in_the_dry_run(tmp_path, capsys):
    study = _study(tmp_path, SHARE)
    plan = build_plan(study)
    assert "pretrain:front_loaded@share=0.25:s7" in plan.steps
    step = plan["eval:front_loaded@share=0.25:rl:s7"]
    assert step.output.parts[-4:-1] == ("front_loaded@share=0.25", "seed-7", "eval-rl")
    # Every arm agrees on stage 0 and on the total steps: one shared prefix, five branches.
    assert [g.arms for g in plan.prefixes] == [tuple(a.name for a in study.arms)]
    assert run_study(study, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "sweep front_loaded: share (pretrain[1].blend.reasoning) = 0.05, 0.1, 0.25" in out
    assert re.search(r"run\s+pretrain:front_loaded@share=0.05:s7\s+runs/front_loaded@share=0.05/seed-7/pretrain/", out)
    # study.json records each arm's sweep for the analysis's sweep view.
    from frontload.core.fingerprint import atomic_write_json

    atomic_write_json(tmp_path / "study.json", study.to_dict())
    arms = json.loads((tmp_path / "study.json").read_text())["arms"]
    assert arms[4]["sweep"]["axes"] == {"share": 0.25} and arms[0]["sweep"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            SHARE.replace('arm = "front_loaded"', 'arm = "front"'),
            r"\[\[sweeps\]\]\[0\]\.arm: no \[\[arms\]\] entry named 'front'",
        ),
        (
            SHARE.replace("pretrain[1]", "pretrain[2]"),
            r"\[\[sweeps\]\]\[0\]\.axes\.share\.key: 'pretrain\[2\]\.blend\.reasoning': pretrain\[2\] does not exist: "
            r"pretrain has 2 entries",
        ),
        (
            SHARE.replace("pretrain[1].blend", "pretrain[1].blnd"),
            r"axes\.share\.key: .*pretrain\[1\]\.blnd does not exist",
        ),
        (
            SHARE.replace("pretrain[1].blend.reasoning", "pretrain[1].samples").replace("0.25]", '"many"]'),
            r"axes\.share\.key: .*pretrain\[1\]\.samples is a number \(16\) in the template, got 'many'",
        ),
        (
            # A key the template lacks is checked by the arm's own config: a blend weight must be a number.
            SHARE.replace("0.25]", '"lots"]').replace("pretrain[1]", "pretrain[0]"),
            r"\[\[sweeps\]\]\[0\] \(front_loaded@share=lots\)\.pretrain\[0\]\.blend\.reasoning: expected a number, got .lots.",
        ),
        (
            SHARE.replace("pretrain[1].blend.reasoning", "pretrain[1].budget"),
            r"\[\[sweeps\]\]\[0\] \(front_loaded@share=0\.05\)\.pretrain\[1\]\.budget: unknown key",
        ),
        (
            SHARE.replace("pretrain[1].blend.reasoning", "pretrain.1"),
            r"axes\.share\.key: 'pretrain\.1': '1' is not a key",
        ),
        (
            SHARE.replace("0.25]", '"a b"]'),
            r"\[\[sweeps\]\]\[0\]\.axes: 'front_loaded@share=a b' is not a valid name",
        ),
        (
            GRID.format(zip="true").replace("[0.9, 0.7]", "[0.9]"),
            r"\[\[sweeps\]\]\[0\]\.zip: zipped axes need equal numbers",
        ),
        (
            SHARE.replace('arm = "front_loaded"', 'arm = "baseline"\nkeep_template = false')
            .replace("pretrain[1].blend.reasoning", "pretrain[1].samples")
            .replace("0.05, 0.1, 0.25", "8, 24"),
            r"keep_template: 'baseline' is the baseline",
        ),
        (SHARE.replace("values = [0.05, 0.1, 0.25]", "values = []"), r"axes\.share\.values: give at least one value"),
    ],
)
def test_bad_sweeps_name_file_table_and_key(tmp_path, extra, message):
    with pytest.raises(FrontloadError, match=r"study\.toml: .*" + message):
        _study(tmp_path, extra)
