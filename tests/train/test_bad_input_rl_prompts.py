"""RL prompt sets are read by the corpus readers' one rule: leftovers are not prompts, and a damaged line is
an error naming its file and line."""

import json

import pytest

from frontload.core.errors import FrontloadError
from frontload.train.prompts import load_prompts


def _row(i: int) -> str:
    meta = {"problem": f"What is {i}+1?", "answer": str(i + 1), "prompt": f"<|user|>\nWhat is {i}+1?\n<|assistant|>\n"}
    return json.dumps({"text": meta["prompt"] + "x", "id": f"d{i}", "metadata": meta}) + "\n"


def test_leftovers_are_not_prompts_and_a_damaged_line_is_named(tmp_path):
    data = tmp_path / "corpus" / "data"
    data.mkdir(parents=True)
    (data / "00000.jsonl").write_text(_row(0) + _row(1))
    (data / ".00001.jsonl.tmp").write_text(_row(7))  # a writer killed before its rename
    (data / "00000.jsonl.bak").write_text(_row(8))
    assert sorted(p.id for p in load_prompts(tmp_path / "corpus")) == ["d0", "d1"]

    (data / "00001.jsonl").write_text(_row(2) + '{"text": "cut off\n')
    with pytest.raises(FrontloadError, match=r"00001\.jsonl:2: malformed_json"):
        load_prompts(tmp_path / "corpus")
