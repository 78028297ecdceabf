"""The command line end to end (tokenizer train → shards → verify) and verify's failures on damaged copies."""

import json
import shutil
from pydoc_data.topics import topics

import pytest

from frontload.cli import main
from frontload.core.manifest import Account, Manifest
from frontload.corpus.verify import verify_folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A JSONL file, a tokenizer trained on it and a shard set, all made through the CLI functions."""
    root = tmp_path_factory.mktemp("cli")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"body": topics[k]}) + "\n" for k in sorted(topics)))
    assert (
        main(
            [
                "corpus",
                "tokenizer",
                "train",
                str(src),
                "-o",
                str(root / "tok"),
                "--vocab-size",
                "400",
                "--text-field",
                "body",
            ]
        )
        == 0
    )
    args = ["corpus", "shards", str(src), "-o", str(root / "shards"), "--tokenizer", str(root / "tok")]
    assert main([*args, "--text-field", "body", "--tasks", "1", "--workers", "1"]) == 0
    return root


def _copy(built, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(built / "shards", dst)
    return dst


def test_train_shards_verify_from_jsonl(built, capsys):
    assert main(["corpus", "verify", str(built / "shards"), "--tokenizer", str(built / "tok")]) == 0
    assert "ok" in capsys.readouterr().out
    assert Manifest.read(built / "shards").counts["documents"] == len(topics)


def test_verify_names_a_truncated_bin(built, tmp_path, capsys):
    copy = _copy(built, tmp_path)
    data = (copy / "00000.bin").read_bytes()
    (copy / "00000.bin").write_bytes(data[: len(data) // 2])
    assert main(["corpus", "verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "00000.bin: truncated" in err


def test_verify_names_an_edited_idx(built, tmp_path):
    copy = _copy(built, tmp_path)
    idx = bytearray((copy / "00000.idx").read_bytes())
    idx[34] ^= 0x01  # first sequence length
    (copy / "00000.idx").write_bytes(bytes(idx))
    problems = verify_folder(copy)
    assert any("00000.idx: content changed" in p for p in problems)
    assert any("00000.idx" in p and "disagree" in p for p in problems)  # caught from the index itself too


def test_verify_rejects_the_wrong_tokenizer(built, tmp_path, tiny_tokenizer):
    problems = verify_folder(built / "shards", tokenizer=tiny_tokenizer.path)
    assert len(problems) == 1 and "made with tokenizer" in problems[0] and str(tiny_tokenizer.path) in problems[0]


def test_verify_corpus_folder_account(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "data").mkdir(parents=True)
    (folder / "rejects").mkdir()
    (folder / "data" / "00000.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    (folder / "rejects" / "00000.jsonl").write_text('{"text": "c", "reason": "dup"}\n')
    account = Account(inputs=3, kept=2, dropped={"dup": 1})
    Manifest(kind="corpus", fingerprint="x", counts={"documents": 2}, account=account).write(folder)
    assert verify_folder(folder) == []
    with open(folder / "data" / "00000.jsonl", "a") as f:
        f.write('{"text": "sneaked in"}\n')
    problems = verify_folder(folder)
    assert any("account keeps 2 records, the data holds 3" in p for p in problems)
