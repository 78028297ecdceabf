"""``frontload filter`` on damaged input: every line is counted, every bad one lands in rejects/read/ with
its file, line and reason, and ``in = kept + sum(dropped)`` holds (no file silently lost, no crash)."""

import json
from pathlib import Path

from frontload.cli import main
from frontload.core.manifest import Manifest
from frontload.corpus.verify import verify_folder
from frontload.filters.synthetic import make_records


def _lines(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_bad_lines_are_counted_and_named_not_lost(tmp_path, capsys):
    rows = make_records(6, rollouts=1, seed=5)
    data = tmp_path / "traces" / "data"
    data.mkdir(parents=True)
    # One invalid UTF-8 line used to drop this whole file with in=0; the array line crashed the run.
    (data / "00000.jsonl").write_bytes(
        _lines(rows[:3])
        + b'{"text": "caf\xff", "id": "bad-utf8"}\n'
        + b"{not json\n"
        + b"[1, 2, 3]\n"
        + b'{"id": "no-text", "metadata": {}}\n'
    )
    (data / "00001.jsonl").write_bytes(_lines(rows[3:]))
    out = tmp_path / "out"

    assert main(["filter", str(tmp_path / "traces"), "-o", str(out), "--no-rule", "--dedup", "none"]) == 0
    printed = capsys.readouterr().out
    assert "in=10 kept=6 dropped=4" in printed

    acc = Manifest.read(out).account
    assert acc.to_dict() == {
        "in": 10,
        "kept": 6,
        "dropped": {"invalid_utf8": 1, "malformed_json": 1, "missing_field": 1, "not_an_object": 1},
    }
    rejects = [json.loads(x) for x in (out / "rejects" / "read" / "00000.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["line"], r["reason"]) for r in rejects] == [
        ("00000.jsonl", 4, "invalid_utf8"),
        ("00000.jsonl", 5, "malformed_json"),
        ("00000.jsonl", 6, "not_an_object"),
        ("00000.jsonl", 7, "missing_field"),
    ]
    kept = [json.loads(x)["id"] for x in (out / "data" / "00000.jsonl").read_text().splitlines()]
    assert sorted(kept) == sorted(r["id"] for r in rows)
    assert verify_folder(out) == []
