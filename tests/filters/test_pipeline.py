"""End-to-end filter runs on a synthetic traces folder with planted duplicates, near-duplicates and eval leaks.

The planted records are the only ones that may go; the account must balance and ``rejects/`` must
hold every dropped record with its reason.
"""

import json
import random
from pathlib import Path

import pytest

from frontload.cli import main
from frontload.core.events import read_events
from frontload.core.manifest import Manifest
from frontload.corpus.verify import verify_folder
from frontload.filters.pipeline import FilterConfig, run_filters
from frontload.filters.synthetic import filler, make_records, rollout

# Words that never occur in the filler prose, so a leak can only come from the planted records.
LONG_Q13 = (
    "zorbix quenalt mirravel tosk fendrel ulbari cragmot velisk prandor hulvex amtrel sorvik tandrel quorix belmont"
)
LONG_Q8 = "glimmerat snoddle prexin varbel tuvomir kessrat dunlop yorrick fambrel ostrava pellin"
SHORT_Q = "What is 17 times 23?"


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _planted_corpus(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A traces folder (originals in shard 0, planted records in shard 1), an eval file, and what to expect."""
    base = make_records(24, rollouts=2, seed=3)
    by_id = {r["id"]: r for r in base}
    rng = random.Random(7)
    m = lambda rid: by_id[rid]["metadata"]  # noqa: E731

    def fresh(problem: str, pid: str, k: int = 0, trace: str | None = None) -> dict:
        return rollout(problem, "7", trace or f"Count them: 7. {filler(rng, 40)}", "7", pid, k)

    planted = {
        # same problem text up to case and spacing, under another problem id
        "dup_problem": (
            fresh("  " + m("p0000000.0")["problem"].upper() + " ", "dup_problem"),
            "dedup:exact_problem",
        ),
        # a second rollout of problem 1 repeating rollout 0's trace up to case and spacing
        "p0000001.9": (
            rollout(
                m("p0000001.0")["problem"],
                m("p0000001.0")["answer"],
                "  " + m("p0000001.0")["trace"].upper(),
                m("p0000001.0")["answer"],
                "p0000001",
                9,
            ),
            "dedup:exact_trace",
        ),
        "near_problem": (
            fresh(m("p0000002.0")["problem"] + " Show your work please.", "near_problem"),
            "dedup:minhash_problem",
        ),
        "p0000003.9": (
            rollout(
                m("p0000003.0")["problem"],
                m("p0000003.0")["answer"],
                m("p0000003.0")["trace"] + " Double check done.",
                m("p0000003.0")["answer"],
                "p0000003",
                9,
            ),
            "dedup:minhash_trace",
        ),
        "leak13": (
            fresh(f"{filler(rng, 10)} {' '.join(LONG_Q13.split()[1:14])} {filler(rng, 5)}", "leak13"),
            "decontaminate:heldout",
        ),
        "leak8": (
            fresh(f"{filler(rng, 10)} {' '.join(LONG_Q8.split()[1:10])} {filler(rng, 5)}", "leak8"),
            "decontaminate:heldout",
        ),
        "short_leak": (fresh("what is 17 TIMES 23", "short_leak"), "decontaminate:heldout"),
        "wrong": (
            rollout(filler(rng, 30) + " How many?", "7", "Count: 8.", "8", "wrong", 0),
            'threshold:verify_v1 == "correct"',
        ),
    }
    # Controls that look close to a leak but are not one.
    controls = [
        fresh("What is 17 times 23 plus 4?", "control_short"),
        fresh(f"{filler(rng, 10)} {' '.join(LONG_Q13.split()[:6])} {filler(rng, 8)}", "control_6gram"),
    ]
    folder = tmp_path / "traces"
    _write(folder / "data" / "00000.jsonl", base)
    _write(folder / "data" / "00001.jsonl", [row for row, _ in planted.values()] + controls)
    eval_file = tmp_path / "heldout.jsonl"
    _write(eval_file, [{"question": q, "answer": "x"} for q in (LONG_Q13, LONG_Q8, SHORT_Q)])
    expected = {row["id"]: reason for row, reason in planted.values()}
    return folder, eval_file, expected


def _rejects(out: Path) -> dict[str, str]:
    got = {}
    for p in sorted((out / "rejects").rglob("*.jsonl")):
        for line in p.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            assert d["metadata"]["filter_step"] == p.parent.name
            got[d["id"]] = d["metadata"]["filter_reason"]
    return got


def _kept_ids(out: Path) -> list[str]:
    return [
        json.loads(line)["id"] for p in sorted((out / "data").glob("*.jsonl")) for line in p.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _planted_corpus(tmp_path_factory.mktemp("planted"))


def test_exactly_the_planted_records_are_dropped_with_minhash_and_13grams(planted, tmp_path):
    folder, eval_file, expected = planted
    expected = {k: v for k, v in expected.items() if k != "leak8.0"}  # 9 shared words: no 13-gram in common
    out = tmp_path / "out"
    config = FilterConfig(dedup=["exact", "minhash"], decontaminate=[f"heldout={eval_file}"], ngram=13)
    manifest = run_filters(folder, out, config, tasks=2)

    assert _rejects(out) == expected
    acc = manifest.account
    n_in = sum(1 for p in (folder / "data").glob("*.jsonl") for _ in p.open())
    assert acc.inputs == n_in and acc.kept == n_in - len(expected) and acc.balanced
    assert acc.dropped["decontaminate:heldout"] == 2
    kept = _kept_ids(out)
    assert len(kept) == len(set(kept)) == acc.kept and "leak8.0" in kept and "control_short.0" in kept
    # Scores are written on every kept record.
    row = json.loads((out / "data" / "00000.jsonl").read_text().splitlines()[0])["metadata"]
    assert row["verify_v1"] == "correct" and row["format_v1"] == "ok" and row["pass_rate_v1"] == 1.0
    assert "dup_line_frac" in row["repetition_v1"] and row["length_v1"] > 10
    # One stats event per step, and the manifest on disk is the one returned.
    events, bad = read_events(out / "run" / "events" / "stats.rank0.jsonl")
    assert bad == 0 and any(e["dropped"].get("decontaminate:heldout") == 2 for e in events)
    assert Manifest.read(out, kind="corpus").account.to_dict() == acc.to_dict()
    assert verify_folder(out) == []  # `frontload corpus verify` finds the folder sound
    # A rerun with the same config reuses the finished folder.
    assert run_filters(folder, out, config, tasks=2).fingerprint == manifest.fingerprint


def test_8grams_catch_the_shorter_leak_and_exact_dedup_alone_keeps_near_duplicates(planted, tmp_path):
    folder, eval_file, expected = planted
    out = tmp_path / "out"
    code = main(
        [
            "filter",
            str(folder),
            "-o",
            str(out),
            "--decontaminate",
            f"heldout={eval_file}",
            "--ngram",
            "8",
            "--dedup",
            "exact",
            "--tasks",
            "2",
        ]
    )
    assert code == 0
    near = {"near_problem.0", "p0000003.9"}
    assert _rejects(out) == {k: v for k, v in expected.items() if k not in near}
    assert near <= set(_kept_ids(out))
    assert Manifest.read(out, kind="corpus").account.balanced


def test_pass_rate_band_and_best_trace_per_problem(tmp_path):
    rows = make_records(6, rollouts=4, seed=5)
    # Problem 0: 1 of 4 rollouts right (pass rate 0.25); problem 1: all wrong.
    for r in rows:
        meta = r["metadata"]
        if (meta["problem_id"] == "p0000000" and meta["rollout"] > 0) or meta["problem_id"] == "p0000001":
            r.update(rollout(meta["problem"], meta["answer"], meta["trace"], "0", meta["problem_id"], meta["rollout"]))
    _write(tmp_path / "in" / "data" / "00000.jsonl", rows)
    out = tmp_path / "out"
    config = FilterConfig(rule='verify_v1 == "correct"', pass_rate_band=[0.1, 0.9], keep="all", dedup=[])
    acc = run_filters(tmp_path / "in", out, config).account
    # Only problem 0 is in the band; its one correct rollout survives the rule.
    assert _kept_ids(out) == ["p0000000.0"]
    assert acc.dropped == {"pass_rate_band:0.1 <= pass_rate_v1 <= 0.9": 20, 'threshold:verify_v1 == "correct"': 3}

    best = run_filters(tmp_path / "in", tmp_path / "best", FilterConfig(keep="best", dedup=[])).account
    kept = _kept_ids(tmp_path / "best")
    assert len(kept) == 5 and len({k.split(".")[0] for k in kept}) == 5  # one trace per solvable problem
    assert best.dropped["best_of_problem"] == 12  # problems 2-5 keep 1 of 4; problem 0 has 1 correct left


def test_bad_inputs_name_the_field_or_file(tmp_path):
    from frontload.core.config import ConfigError, from_mapping
    from frontload.core.errors import FrontloadError

    with pytest.raises(ConfigError, match="rule"):
        FilterConfig(rule="__import__('os')")
    table = {"rule": "length_v1 < 10", "dedup": ["exact", "minhash"], "pass_rate_band": [0.1, 0.9]}
    assert from_mapping(FilterConfig, table, "study.toml: [filters]").pass_rate_band == [0.1, 0.9]
    with pytest.raises(ConfigError, match=r"\[filters\]\.ngrams: unknown key"):
        from_mapping(FilterConfig, {"ngrams": 8}, "study.toml: [filters]")
    with pytest.raises(ConfigError, match=r"\[filters\]\.pass_rate_band"):
        from_mapping(FilterConfig, {"pass_rate_band": [0.9, 0.1]}, "study.toml: [filters]")
    with pytest.raises(ConfigError, match="dedup"):
        FilterConfig(dedup=["fuzzy"])
    with pytest.raises(ConfigError, match=r"decontaminate\[0\]"):
        FilterConfig(decontaminate=[str(tmp_path / "missing.jsonl")])
    with pytest.raises(FrontloadError, match="data"):
        run_filters(tmp_path, tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a"}\n{"q": 1}\n')
    _write(tmp_path / "in" / "data" / "0.jsonl", make_records(1, 1))
    with pytest.raises(FrontloadError, match=r"bad.jsonl:2: no field 'question'"):
        run_filters(tmp_path / "in", tmp_path / "out", FilterConfig(decontaminate=[str(bad)]))
    assert not (tmp_path / "out").exists()  # the eval file is checked before any record is scored


def test_a_crashed_run_resumes_and_still_balances(tmp_path, monkeypatch):
    from frontload.filters import dedup

    rows = make_records(10, rollouts=2, seed=11, faults=True)
    _write(tmp_path / "in" / "data" / "00000.jsonl", rows[:10])
    _write(tmp_path / "in" / "data" / "00001.jsonl", rows[10:])
    out = tmp_path / "out"
    original = dedup.DropListFilter.filter

    def crash(self, doc):
        raise RuntimeError("killed")

    monkeypatch.setattr(dedup.DropListFilter, "filter", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run_filters(tmp_path / "in", out, FilterConfig(), tasks=2)
    assert not (out / "manifest.json").exists()
    work = next((out / "work").iterdir())
    assert len(list((work / "logs" / "1_score" / "completions").iterdir())) == 2  # scoring is not redone

    monkeypatch.setattr(dedup.DropListFilter, "filter", original)
    acc = run_filters(tmp_path / "in", out, FilterConfig(), tasks=2).account
    assert acc.inputs == 20 and acc.balanced and acc.kept == len(_kept_ids(out))
    events, _ = read_events(out / "run" / "events" / "stats.rank0.jsonl")
    verify = [e for e in events if "verify answers" in e["step_name"]]
    assert verify[-1]["inputs"] == 20  # stats merged from both ranks' files, not only the rerun ones


def test_a_rule_that_drops_everything_still_writes_a_balanced_corpus_when_allowed(tmp_path):
    from frontload.core.manifest import EmptyOutputError

    _write(tmp_path / "in" / "data" / "00000.jsonl", make_records(5, rollouts=2, seed=2))
    out = tmp_path / "out"
    cfg = FilterConfig(rule="length_v1 < 0", dedup=["exact", "minhash"])
    with pytest.raises(EmptyOutputError, match="10 of 10 records dropped"):
        run_filters(tmp_path / "in", out, cfg)
    acc = run_filters(tmp_path / "in", out, cfg, allow_empty=True).account
    assert acc.to_dict() == {"in": 10, "kept": 0, "dropped": {"threshold:length_v1 < 0": 10}}
    assert (out / "data").is_dir() and _kept_ids(out) == []
