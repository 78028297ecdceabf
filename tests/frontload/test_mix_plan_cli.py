"""`frontload mix plan` builds the shard sets a study needs and prints each arm's plan."""

import json
import shutil
from pathlib import Path

from frontload.cli import main

STUDY = Path(__file__).with_name("resume_study.toml")


def test_mix_plan_prints_tokens_and_repeats_per_stage_and_source(tmp_path, capsys):
    shutil.copy(STUDY, tmp_path / "study.toml")
    out = tmp_path / "plans.json"
    rc = main(["mix", "plan", str(tmp_path / "study.toml"), "--workspace", str(tmp_path / "ws"), "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "== solo / pretrain ==" in text and "== solo / sft ==" in text
    plans = json.loads(out.read_text())
    stages = plans["solo/pretrain"]["phases"]["pretrain"]["stages"]
    assert [sorted(s["sources"]) for s in stages] == [["web"], ["problems", "web"]]
    # The plan is exact: stage budgets are the sample counts the study asked for.
    assert [sum(src["samples"] for src in s["sources"].values()) for s in stages] == [24, 24]
    assert (tmp_path / "ws" / "mix" / "solo" / "sft" / "plan.json").exists()
