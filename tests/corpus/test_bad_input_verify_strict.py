"""Smaller faults: verify notices deleted rejects and damaged indexes without noise; --strict stops with one
line and leaves no temporary files behind, whatever the number of workers."""

import gc
import json
import shutil
import sys
from pydoc_data.topics import topics

import pytest

from frontload.cli import main
from frontload.corpus.text_corpus import write_text_corpus
from frontload.corpus.verify import verify_folder


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("shardset")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": topics[k]}) + "\n" for k in sorted(topics)[:50]) + "{broken\n")
    out = root / "shards"
    args = ["corpus", "shards", str(src), "-o", str(out), "--tokenizer", str(tiny_tokenizer.path), "--tasks", "1"]
    assert main(args) == 0
    return out


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_verify_fails_when_rejects_were_deleted(shard_set, tmp_path, capsys):
    copy = _copy(shard_set, tmp_path)
    assert verify_folder(copy) == []
    shutil.rmtree(copy / "rejects")
    assert main(["corpus", "verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"{copy / 'rejects'}: missing, but the account drops 1" in err

    corpus = tmp_path / "corpus"
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "kept"}\n{"no_text": 1}\n')
    write_text_corpus(corpus, [src])
    assert verify_folder(corpus) == []
    shutil.rmtree(corpus / "rejects")
    assert any("rejects: missing, but the account drops 1" in p for p in verify_folder(corpus))


def test_verify_of_a_damaged_index_prints_only_its_findings(shard_set, tmp_path, monkeypatch):
    copy = _copy(shard_set, tmp_path)
    (copy / "00000.idx").write_bytes((copy / "00000.idx").read_bytes()[:20])
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    problems = verify_folder(copy)
    gc.collect()
    assert any("00000.idx: Megatron's IndexedDataset cannot read it" in p for p in problems)
    assert unraisable == []  # no "Exception ignored in IndexedDataset.__del__"


def test_strict_with_several_workers_is_one_line_and_leaves_no_temporaries(tiny_tokenizer, tmp_path, capfd):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps({"text": "fine"}) + "\n{broken\n")
    # Big enough that the other task is still writing when the failing one stops the pool.
    texts = [topics[k] for k in sorted(topics)] * 40
    (src / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    args = ["corpus", "shards", str(src), "-o", str(out), "--tokenizer", str(tiny_tokenizer.path)]
    assert main([*args, "--tasks", "2", "--workers", "2", "--strict"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"frontload: error: {src / 'a.jsonl'}:2: malformed_json")
    assert [p.name for p in out.rglob("*") if ".tmp" in p.name] == []
    assert not (out / "manifest.json").exists()
