"""External problem sources: local JSONL and Parquet files, saved Hugging Face datasets, reasoning-gym."""

import json

import pytest

from frontload.core.config import ConfigError
from frontload.core.manifest import Manifest
from frontload.synth.sources import FileSource, ReasoningGymSource, write_source


def rows_of(folder):
    return [json.loads(x) for x in (folder / "00000.jsonl").read_text().splitlines()]


def test_jsonl_with_custom_fields_answer_marker_and_drops(tmp_path):
    src = tmp_path / "gsm.jsonl"
    rows = [
        {"q": "Tom has 3 apples and buys 4. How many?", "sol": {"text": "3 + 4 = 7\n#### 7"}},
        {"q": "What is 10 / 2?", "sol": {"text": "10 / 2 = 5\n#### 5"}},
        {"q": "What is 10 / 2?", "sol": {"text": "again\n#### 5"}},  # duplicate question
        {"q": "", "sol": {"text": "#### 1"}},  # empty question
        {"sol": {"text": "#### 2"}},  # no question field
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FileSource(
        path=str(src),
        question_field="q",
        answer_field="sol.text",
        solution_field="sol.text",
        answer_after="####",
        family="gsm",
    )
    m = write_source(tmp_path / "out", cfg)
    assert m.account.to_dict() == {
        "in": 5,
        "kept": 2,
        "dropped": {"duplicate": 1, "empty_question": 1, "missing_question": 1},
    }
    kept = rows_of(tmp_path / "out/data")
    assert [r["metadata"]["answer"] for r in kept] == ["7", "5"]
    md = kept[0]["metadata"]
    assert md["source"] == "file:gsm.jsonl" and md["family"] == "gsm" and md["origin"]["line"] == 1
    assert md["trace"].startswith("3 + 4 = 7") and kept[0]["text"] == md["prompt"] + md["response"]
    assert len(rows_of(tmp_path / "out/rejects")) == 3
    # the same input and config are reused, not rebuilt
    assert write_source(tmp_path / "out", cfg).fingerprint == m.fingerprint


def test_missing_field_in_the_first_record_names_file_line_and_field(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"question": "1 + 1?", "solution": "2"}) + "\n")
    with pytest.raises(ConfigError, match=r"answer_field: .*bad.jsonl:1: record has no field 'answer'"):
        write_source(tmp_path / "out", FileSource(path=str(src)))
    assert not (tmp_path / "out").exists()


def test_parquet_and_saved_hf_dataset(tmp_path):
    import datasets

    data = {"problem": ["2 + 2?", "3 * 3?", "7 - 5?"], "answer": [4, 9, 2]}
    ds = datasets.Dataset.from_dict(data)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "hf"))
    m1 = write_source(tmp_path / "a", FileSource(path=str(tmp_path / "p.parquet"), question_field="problem"))
    m2 = write_source(tmp_path / "b", FileSource(path=str(tmp_path / "hf"), question_field="problem", split="test"))
    assert m1.counts["documents"] == m2.counts["documents"] == 3
    assert [r["metadata"]["answer"] for r in rows_of(tmp_path / "b/data")] == ["4", "9", "2"]
    assert rows_of(tmp_path / "b/data")[0]["metadata"]["source"] == "hf:hf"
    with pytest.raises(ConfigError, match="split"):
        write_source(tmp_path / "c", FileSource(path=str(tmp_path / "hf"), question_field="problem"))


def test_reasoning_gym_generators(tmp_path):
    pytest.importorskip("reasoning_gym")
    m = write_source(tmp_path / "gym", ReasoningGymSource(datasets=["basic_arithmetic", "chain_sum"], n=5, seed=1))
    assert Manifest.read(tmp_path / "gym", kind="corpus").counts == m.counts
    rows = rows_of(tmp_path / "gym/data")
    assert m.account.inputs == 10 and len(rows) == m.account.kept >= 8
    assert {r["metadata"]["family"] for r in rows} == {"gym:basic_arithmetic", "gym:chain_sum"}
    with pytest.raises(ConfigError, match="no_such_dataset"):
        write_source(tmp_path / "bad", ReasoningGymSource(datasets=["no_such_dataset"], n=2))


def test_a_source_that_yields_no_problem_is_an_error_with_the_account(tmp_path):
    from frontload.core.manifest import EmptyOutputError

    src = tmp_path / "dups.jsonl"
    src.write_text(json.dumps({"question": "1 + 1?", "answer": ""}) + "\n" + json.dumps({"question": "", "answer": 2}))
    with pytest.raises(EmptyOutputError, match=r"out: 2 of 2 records dropped: .*empty_answer \(1\).*field names"):
        write_source(tmp_path / "out", FileSource(path=str(src)))
    assert not (tmp_path / "out").exists()
