"""Which files of a folder every reader reads (one documented rule), and an input fingerprint that covers
exactly those files; damaged Parquet/gzip inputs are one error naming the file."""

import gzip
import json
from pathlib import Path

import pytest

from frontload.cli import main
from frontload.core.manifest import Manifest
from frontload.corpus.readers import input_files, input_fingerprint, read_documents


def _jsonl(path: Path, *texts: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _gz(path: Path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as f:
        f.write((json.dumps({"text": text}) + "\n").encode())


@pytest.fixture
def mixed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "mixed"
    _jsonl(d / "a.jsonl", "from jsonl")
    _jsonl(d / "b.ndjson", "from ndjson")
    pq.write_table(pa.table({"text": ["from parquet"]}), d / "c.parquet")
    _jsonl(d / "d.json", "from json lines")
    (d / "e.json").write_text('{\n  "a config": true\n}\n')  # one pretty JSON document, not JSON Lines
    _gz(d / "sub" / "f.jsonl.gz", "from a subfolder", mtime=1)
    # Never documents: hidden files and folders, backups and temporaries.
    _jsonl(d / ".x.jsonl.tmp", "hidden temporary")
    _jsonl(d / ".git" / "y.jsonl", "hidden folder")
    _jsonl(d / "g.jsonl.bak", "backup")
    _jsonl(d / "h.jsonl~", "editor backup")
    _jsonl(d / "i.jsonl.tmp", "temporary")
    return d


def test_one_rule_picks_the_files_of_a_folder(mixed):
    names = [p.relative_to(mixed).as_posix() for p in input_files(mixed)]
    assert names == ["a.jsonl", "b.ndjson", "c.parquet", "d.json", "sub/f.jsonl.gz"]
    texts = [d.text for d in read_documents([mixed])]
    assert texts == ["from jsonl", "from ndjson", "from parquet", "from json lines", "from a subfolder"]


def test_fingerprint_covers_exactly_the_files_read(mixed):
    before = input_fingerprint([mixed])
    _jsonl(mixed / ".x.jsonl.tmp", "changed, but never read")
    _jsonl(mixed / "g.jsonl.bak", "changed, but never read")
    _gz(mixed / "sub" / "f.jsonl.gz", "from a subfolder", mtime=999)  # same records, another gzip time
    assert input_fingerprint([mixed]) == before
    _jsonl(mixed / "b.ndjson", "an edited ndjson file is read, so it counts")
    assert input_fingerprint([mixed]) != before


def test_shards_read_every_file_the_rule_names(mixed, tiny_tokenizer, tmp_path, capsys):
    out = tmp_path / "shards"
    rc = main(["corpus", "shards", str(mixed), "-o", str(out), "--tokenizer", str(tiny_tokenizer.path)])
    assert rc == 0
    assert Manifest.read(out).account.to_dict() == {"in": 5, "kept": 5, "dropped": {}}


def test_a_folder_with_nothing_readable_is_an_error_naming_it(tmp_path, tiny_tokenizer, capfd):
    empty = tmp_path / "only_backups"
    _jsonl(empty / "a.jsonl.bak", "backup")
    _jsonl(empty / ".hidden.jsonl", "hidden")
    rc = main(["corpus", "shards", str(empty), "-o", str(tmp_path / "s"), "--tokenizer", str(tiny_tokenizer.path)])
    assert rc == 2
    assert f"{empty}: no readable document files" in capfd.readouterr().err


def test_damaged_parquet_and_gzip_are_one_error_naming_the_file(tmp_path, tiny_tokenizer, capfd):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "in" / "good.parquet"
    good.parent.mkdir()
    pq.write_table(pa.table({"text": [f"document {i} " * 20 for i in range(200)]}), good)
    cut = tmp_path / "in" / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    rc = main(["corpus", "shards", str(cut), "-o", str(tmp_path / "s1"), "--tokenizer", str(tiny_tokenizer.path)])
    err = capfd.readouterr().err
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith(f"frontload: error: {cut}: not a readable Parquet file")
    assert "Traceback" not in err

    gz = tmp_path / "in" / "cut.jsonl.gz"
    _gz(gz, "x " * 5000, mtime=0)
    gz.write_bytes(gz.read_bytes()[:40])
    rc = main(["corpus", "shards", str(gz), "-o", str(tmp_path / "s2"), "--tokenizer", str(tiny_tokenizer.path)])
    err = capfd.readouterr().err
    assert rc == 2 and f"{gz}: cannot read the file" in err and "Traceback" not in err


def test_tokenizer_training_counts_and_reports_bad_records(tmp_path, capsys):
    from pydoc_data.topics import topics

    src = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": topics[k]}) for k in sorted(topics)[:40]]
    src.write_text("\n".join([*lines[:5], "{broken", json.dumps({"body": "no text"}), *lines[5:]]) + "\n")
    out = tmp_path / "tok"
    assert main(["corpus", "tokenizer", "train", str(src), "-o", str(out), "--vocab-size", "400"]) == 0
    printed = capsys.readouterr().out
    assert "trained on 40 of 42 records; 2 dropped: malformed_json (1), missing_field (1)" in printed
    recorded = json.loads((out / "training.json").read_text())["account"]
    assert recorded == {"in": 42, "kept": 40, "dropped": {"malformed_json": 1, "missing_field": 1}}
    rejects = [json.loads(x) for x in (out / "rejects" / "00000.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(6, "malformed_json"), (7, "missing_field")]


def test_verify_names_a_damaged_parquet_file_in_a_corpus_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from frontload.core.manifest import Account
    from frontload.corpus.verify import verify_folder

    folder = tmp_path / "corpus"
    (folder / "data").mkdir(parents=True)
    part = folder / "data" / "00000.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(100)]}), part)
    Manifest(kind="corpus", fingerprint="x", counts={"documents": 100}, account=Account(inputs=100, kept=100)).write(
        folder
    )
    assert verify_folder(folder) == []
    part.write_bytes(part.read_bytes()[:100])
    problems = verify_folder(folder)
    assert len(problems) == 1 and problems[0].startswith(f"{part}: unreadable")
