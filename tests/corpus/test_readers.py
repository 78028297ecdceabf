"""Readers: JSONL, gzip JSONL, Parquet and saved datasets; every bad record is named by file and line."""

import gzip
import json

import pytest

from frontload.corpus.readers import ReadError, RecordSpec, make_reader, read_documents

BAD_JSONL = (
    b'{"text": "first good", "id": "a"}\n'
    b"{not json\n"
    b'{"text": "caf\xff"}\n'
    b"\n"
    b'{"body": "no text field"}\n'
    b'{"text": "   "}\n'
    b"[1, 2]\n"
    b'{"text": 7}\n'
    b'{"text": "second good", "source": "web"}\n'
)


def test_bad_records_are_counted_and_named_by_file_and_line(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_bytes(BAD_JSONL)
    (tmp_path / "other_docs.jsonl").write_text('{"text": "a different file"}\n')  # must not be read
    docs = list(read_documents([src], rejects_dir=tmp_path / "rejects"))
    assert [d.text for d in docs] == ["first good", "second good"]
    assert docs[0].id == "a" and docs[1].metadata["source"] == "web"
    rejects = [json.loads(line) for line in (tmp_path / "rejects" / "00000.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "malformed_json"),
        (3, "invalid_utf8"),
        (5, "missing_field"),
        (6, "empty_text"),
        (7, "not_an_object"),
        (8, "bad_type"),
    ]
    assert all(r["file"].endswith("docs.jsonl") for r in rejects)
    assert "body" in rejects[2]["error"]
    with pytest.raises(ReadError, match=r"docs\.jsonl:2: malformed_json"):
        list(read_documents([src], on_error="raise"))


def test_gzip_jsonl_parquet_and_saved_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"meta": {"body": "from gzip"}}) + "\n")
    pq.write_table(pa.table({"meta": [{"body": "from parquet"}, {"body": ""}]}), tmp_path / "b.parquet")
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"meta": [{"body": "from dataset"}, {"body": None}]})}
    ).save_to_disk(str(tmp_path / "hf"))
    spec = RecordSpec(text_field="meta.body")
    reader = make_reader([tmp_path / "a.jsonl.gz", tmp_path / "b.parquet", f"{tmp_path / 'hf'}::train"], spec)
    docs = list(reader.run(None, 0, 1))
    assert [d.text for d in docs] == ["from gzip", "from parquet", "from dataset"]
    assert reader.checker.counts == {"empty_text": 1, "bad_type": 1}


def test_corpus_folder_reads_data_not_rejects(tmp_path):
    (tmp_path / "corpus" / "data").mkdir(parents=True)
    (tmp_path / "corpus" / "rejects").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text("{}")
    (tmp_path / "corpus" / "data" / "00000.jsonl").write_text('{"text": "kept"}\n')
    (tmp_path / "corpus" / "rejects" / "00000.jsonl").write_text('{"text": "rejected"}\n')
    assert [d.text for d in read_documents([tmp_path / "corpus"])] == ["kept"]


def test_sft_records_from_fields_and_from_messages(tmp_path):
    src = tmp_path / "sft.jsonl"
    rows = [
        {"metadata": {"prompt": "<|user|>\nQ\n<|assistant|>\n", "response": "A<|end|>"}},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ]
        },
        {"messages": [{"role": "user", "content": "no answer"}]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reader = make_reader([src], RecordSpec(sft=True))
    docs = list(reader.run(None, 0, 1))
    assert [(d.metadata["prompt"], d.metadata["response"]) for d in docs] == [
        ("<|user|>\nQ\n<|assistant|>\n", "A<|end|>"),
        ("<|system|>\nbe brief\n<|user|>\nHi\n<|assistant|>\n", "Hello"),
    ]
    assert reader.checker.counts == {"missing_field": 1}
