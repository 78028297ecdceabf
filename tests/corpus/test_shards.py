"""Shard sets: Megatron-core reads back exactly the tokenizer's ids; SFT masks align; reruns are byte-identical."""

import json
import shutil
from pydoc_data.topics import topics

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from frontload.core.chat import END, render_example
from frontload.core.errors import FrontloadError
from frontload.core.manifest import Manifest
from frontload.corpus.shards import build_shards, token_dtype


def _write_inputs(folder, n_files=3):
    """pydoc topics spread over JSONL files, each with one malformed line; returns texts per file."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(topics)
    per_file = []
    for i in range(n_files):
        texts = [topics[k] for k in keys[i::n_files]]
        lines = [json.dumps({"text": t}) for t in texts]
        lines.insert(1, "{truncated")
        (folder / f"part{i}.jsonl").write_text("\n".join(lines) + "\n")
        per_file.append(texts)
    return sorted(folder.glob("*.jsonl")), per_file


def _read(prefix):
    ds = IndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))], ds


def test_megatron_reads_exactly_the_tokenizer_ids(tiny_tokenizer, tmp_path):
    files, per_file = _write_inputs(tmp_path / "in")
    m = build_shards(files, tmp_path / "shards", tiny_tokenizer, tasks=2, workers=2)
    eod = tiny_tokenizer.eod_id
    assert m.extra["prefixes"] == ["00000", "00001"] and m.extra["dtype"] == "uint16"
    for rank, prefix in enumerate(m.extra["prefixes"]):
        # task r reads files r, r + tasks, ... in order
        texts = [t for texts in per_file[rank::2] for t in texts]
        got, ds = _read(tmp_path / "shards" / prefix)
        assert ds.index.dtype == np.uint16
        assert got == [tiny_tokenizer.encode(t) + [eod] for t in texts]
    n_docs = sum(len(t) for t in per_file)
    assert m.counts["documents"] == n_docs
    assert m.account.to_dict() == {"in": n_docs + 3, "kept": n_docs, "dropped": {"malformed_json": 3}}
    assert (
        Manifest.read(tmp_path / "shards", kind="shards").extra["tokenizer_fingerprint"] == tiny_tokenizer.fingerprint
    )
    stats = (tmp_path / "shards" / "events" / "stats.rank0.jsonl").read_text()
    assert json.loads(stats)["dropped"] == {"malformed_json": 3}
    assert token_dtype(70_000) == "int32"


def test_sft_mask_covers_the_response_its_end_and_eod(tiny_tokenizer, tmp_path):
    rows = []
    for i in range(20):
        prompt, response = render_example(f"What is {i} + {i}?", f"{i} + {i} = {2 * i}", str(2 * i))
        rows.append({"text": prompt + response, "metadata": {"prompt": prompt, "response": response}})
    rows.append({"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]})
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = build_shards([src], tmp_path / "sft", tiny_tokenizer, sft=True, tasks=1, workers=1)
    assert m.extra["sft"] and m.extra["mask_prefixes"] == ["00000_mask"]
    tokens, _ = _read(tmp_path / "sft" / "00000")
    masks, mds = _read(tmp_path / "sft" / "00000_mask")
    assert mds.index.dtype == np.uint8
    end = tiny_tokenizer.token_id(END)
    for row, toks, mask in zip(rows, tokens, masks):
        assert len(toks) == len(mask)
        if "metadata" in row:
            p = tiny_tokenizer.encode(row["metadata"]["prompt"])
            r = tiny_tokenizer.encode(row["metadata"]["response"])
        else:
            p = tiny_tokenizer.encode("<|user|>\nSay hi\n<|assistant|>\n")
            r = tiny_tokenizer.encode("hi" + END)  # a turn always ends with <|end|>
        assert toks == p + r + [tiny_tokenizer.eod_id]
        assert mask == [0] * len(p) + [1] * (len(r) + 1)
        assert toks[-2] == end and mask[-2:] == [1, 1]
    assert m.counts["loss_tokens"] == sum(map(sum, masks))


def _hashes(folder):
    return {k: v["sha256"] for k, v in Manifest.read(folder).extra["files"].items()}


def test_rerun_after_a_kill_is_byte_identical(tiny_tokenizer, tmp_path):
    files, _ = _write_inputs(tmp_path / "in")
    first = build_shards(files, tmp_path / "a", tiny_tokenizer, tasks=2, workers=1)
    build_shards(files, tmp_path / "b", tiny_tokenizer, tasks=2, workers=1)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    # The tokenizer.json twin alone writes the same bytes as the SentencePiece model.
    hf = build_shards(files, tmp_path / "hf", tiny_tokenizer.path / "tokenizer.json", tasks=2, workers=1)
    assert _hashes(tmp_path / "hf") == _hashes(tmp_path / "a")
    assert hf.extra["tokenizer_fingerprint"] != first.extra["tokenizer_fingerprint"]
    # Simulate a kill during task 1: no manifest, no completion marker, a half-written temporary file.
    b = tmp_path / "b"
    (b / "manifest.json").unlink()
    (b / "logs" / "completions" / "00001").unlink()
    (b / "00001.bin").unlink()
    (b / "00001.idx").unlink()
    (b / ".00001.tmp.bin").write_bytes(b"\x01\x02partial")
    again = build_shards(files, b, tiny_tokenizer, tasks=2, workers=1)
    assert _hashes(b) == _hashes(tmp_path / "a")
    assert again.fingerprint == first.fingerprint and again.account.to_dict() == first.account.to_dict()
    assert not list(b.glob(".*.tmp*"))
    # A finished set is reused as is; other inputs into the same folder are refused unless overwriting.
    assert build_shards(files, b, tiny_tokenizer, tasks=2, workers=1).fingerprint == first.fingerprint
    with pytest.raises(FrontloadError, match="already holds a finished shards set"):
        build_shards(files[:1], b, tiny_tokenizer, tasks=2, workers=1)
    shutil.rmtree(tmp_path / "a")


def test_strict_mode_stops_at_the_first_bad_record_naming_file_and_line(tiny_tokenizer, tmp_path):
    files, _ = _write_inputs(tmp_path / "in", n_files=1)
    with pytest.raises(FrontloadError, match=r"part0\.jsonl:2: malformed_json"):
        build_shards(files, tmp_path / "strict", tiny_tokenizer, tasks=1, workers=1, on_error="raise")
    assert not (tmp_path / "strict" / "manifest.json").exists()
    assert not [p.name for p in (tmp_path / "strict").rglob("*") if p.is_file() and p.parent.name != "logs"]
