"""A command that keeps no record fails with the drop account (unless --allow-empty); --sft reads plain
top-level prompt/response files."""

import json

from frontload.cli import main
from frontload.core.manifest import Manifest
from frontload.corpus.verify import verify_folder


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _shards(tok, *args):
    return main(["corpus", "shards", *map(str, args), "--tokenizer", str(tok.path), "--tasks", "1", "--workers", "1"])


def test_every_record_dropped_is_an_error_with_the_account(tiny_tokenizer, tmp_path, capfd):
    src = tmp_path / "plain.jsonl"
    _jsonl(src, [{"text": f"a plain document {i}"} for i in range(5)])
    out = tmp_path / "sft"
    assert _shards(tiny_tokenizer, src, "-o", out, "--sft") == 2
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert f"{out}: 5 of 5 records dropped: missing_field (5)" in err
    assert "no field 'metadata.prompt'" in err and f"see {out / 'rejects'}/" in err and "--allow-empty" in err
    assert not (out / "manifest.json").exists()
    assert verify_folder(out)  # nothing there that verify could call sound

    assert _shards(tiny_tokenizer, src, "-o", out, "--sft", "--allow-empty") == 0
    assert Manifest.read(out).account.to_dict() == {"in": 5, "kept": 0, "dropped": {"missing_field": 5}}


def test_an_empty_input_is_an_error(tiny_tokenizer, tmp_path, capfd):
    src = tmp_path / "empty.jsonl"
    src.write_text("\n")
    assert _shards(tiny_tokenizer, src, "-o", tmp_path / "out") == 2
    assert "the input holds no records" in capfd.readouterr().err


def test_sft_finds_top_level_prompt_and_response(tiny_tokenizer, tmp_path):
    src = tmp_path / "pairs.jsonl"
    _jsonl(src, [{"prompt": f"<|user|>\nQ{i}\n<|assistant|>\n", "response": f"A{i}"} for i in range(4)])
    out = tmp_path / "sft"
    assert _shards(tiny_tokenizer, src, "-o", out, "--sft") == 0
    m = Manifest.read(out)
    assert m.account.to_dict() == {"in": 4, "kept": 4, "dropped": {}} and m.counts["loss_tokens"] > 0


def test_filter_that_keeps_nothing_is_an_error_unless_allowed(tmp_path, capfd):
    from frontload.filters.synthetic import make_records

    _jsonl(tmp_path / "in" / "data" / "00000.jsonl", make_records(3, rollouts=2, seed=2))
    out = tmp_path / "out"
    args = ["filter", str(tmp_path / "in"), "-o", str(out), "--rule", "length_v1 < 0"]
    assert main(args) == 2
    err = capfd.readouterr().err
    assert f"{out}: 6 of 6 records dropped: threshold:length_v1 < 0 (6)" in err and "--allow-empty" in err
    assert not (out / "manifest.json").exists()
    assert main([*args, "--allow-empty"]) == 0
    assert Manifest.read(out).account.to_dict() == {"in": 6, "kept": 0, "dropped": {"threshold:length_v1 < 0": 6}}
