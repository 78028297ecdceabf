"""``steps_v1``: every arithmetic step of a trace recomputed, so a right answer reached by wrong steps can be dropped.

Traces are hand-made in the formats of the chain families (``7 - 5 = 2``, ``b = a + 3 = 5 + 3 = 8``,
``3 × 4 = 12, and 12 mod 10 = 2``) and the built-in families' gold traces.
"""

import json
import random
from pathlib import Path

import pytest
from datatrove.data import Document

from frontload.core.config import from_mapping
from frontload.filters.pipeline import FilterConfig, run_filters
from frontload.filters.stepcheck import StepScorer, check_steps
from frontload.filters.synthetic import rollout
from frontload.filters.threshold import Rule
from frontload.synth.families import FAMILIES

CORRECT = [
    ("Compute 3 + 4 - 5.", "3 + 4 = 7\n7 - 5 = 2"),
    (
        "Start with 3, then add 4, then subtract 5. What is the result?",
        "We start at 3 and apply the 2 steps in order; the value stays between 0 and 9.\n"
        "3 + 4 = 7, so the value is now 7\n7 - 5 = 2, so the value is now 2\nCheck: 3 + 4 - 5 = 2.",
    ),
    ("Compute ((3 × 4) + 5 - 9) mod 10.", "3 × 4 = 2\n2 + 5 = 7\n7 - 9 = 8"),  # the problem's modulus
    (
        "Begin at 3 and apply, in order: times 4, plus 5. What is the result mod 10?",
        "We start at 3 and apply the 2 steps in order; reducing mod 10 after each.\n"
        "3 × 4 = 12, and 12 mod 10 = 2\n2 + 5 = 7, and 7 mod 10 = 7\n"
        "Check: 3 × 4 + 5 = 17 without reducing, and 17 mod 10 = 7.",
    ),
    ("Let a = 5, b = a + 3, c = b - 2. What is c?", "b = 5 + 3 = 8\nc = 8 - 2 = 6"),
    (
        "a is 5. b is a plus 3. c is a minus 2. Find c.",
        "We know a = 5; each definition uses a value found before it.\n"
        "b = a + 3 = 5 + 3 = 8\nc = a - 2 = 5 - 2 = 3\nSo c = 3.",
    ),
    ("Compute (20 - 19 * 2) * 10.", "19 * 2 = 38, so the expression becomes (20 - 38) * 10\n(-18) * 10 = -180"),
    ("Compute (85 × 79 + 4) mod 10.", "85 mod 10 = 5, 79 mod 10 = 9, 4 mod 10 = 4\n5 × 9 = 45, and 45 mod 10 = 5"),
    ("How many times does 18 go into 6498?", "64 ÷ 18 = 3, remainder 10\n109 ÷ 18 = 6, remainder 1"),
    (
        "Determine y given that -2y - 4 = -10.",
        "Add 4 to both sides: -2y = -6\nDivide both sides by -2: y = -6 / -2 = 3",
    ),
]


@pytest.mark.parametrize(("problem", "trace"), CORRECT)
def test_correct_traces_score_one(problem, trace):
    score = check_steps(trace, problem)
    assert score["checked"] >= 1 and score["correct"] == score["checked"]
    assert score["fraction"] == 1.0 and score["first_wrong"] is None


def test_one_wrong_step_scores_below_one_even_when_the_answer_is_right():
    # 3 + 4 is not 8, yet 8 - 6 = 2 lands on the right digit: the final-answer check would accept it.
    score = check_steps("3 + 4 = 8\n8 - 6 = 2", "Compute 3 + 4 - 5.")
    assert score == {
        "checked": 2,
        "correct": 1,
        "fraction": 0.5,
        "first_wrong": "3 + 4 = 8",
        "links": 1,
        "breaks": 0,
    }
    assert check_steps("b = a + 3 = 5 + 3 = 9", "Let a = 5, b = a + 3.")["fraction"] == 0.0
    assert check_steps("7 ÷ 2 = 3", "")["fraction"] == 0.0  # a division must be exact without a remainder
    assert check_steps("64 ÷ 18 = 3, remainder 9", "")["fraction"] == 0.0


def test_mod_10_lines_are_checked_modulo_10():
    assert check_steps("8 × 7 = 6 (mod 10)")["fraction"] == 1.0
    assert check_steps("8 × 7 = 6 mod 10")["fraction"] == 1.0
    assert check_steps("8 + 7 ≡ 5 (mod 10)")["fraction"] == 1.0
    assert check_steps("8 × 7 = 5 (mod 10)")["fraction"] == 0.0
    assert check_steps("8 × 7 = 56, and 56 mod 10 = 6")["fraction"] == 1.0
    assert check_steps("8 × 7 = 56, and 56 mod 10 = 5")["first_wrong"] == "56 mod 10 = 5"
    # Without a modulus on the line or in the problem, 8 × 7 = 6 is plain wrong.
    assert check_steps("8 × 7 = 6")["fraction"] == 0.0
    assert check_steps("8 × 7 = 6", "Compute (8 × 7) mod 10.")["fraction"] == 1.0


def test_lines_without_a_single_step_are_ignored():
    trace = (
        "We have 3 apples and 4 pears, 7 fruits in all.\n"
        "2 + 3 × 4 = 14 is a longer expression, and (3 + 4) × 2 = 14 too.\n"
        "Decimals 1.5 + 2 = 3.5 and fractions 1/2 + 1/3 = 5/6 are not integer steps.\n"
        "20 km/h × 3 h = 60 km has units between its numbers.\n"
        "3 + 4 = 9\n"
    )
    score = check_steps(trace)
    assert (score["checked"], score["correct"], score["first_wrong"]) == (1, 0, "3 + 4 = 9")


def test_no_checkable_line_gives_none_and_a_rule_keeps_or_drops_it_explicitly():
    score = check_steps("Alice is a knight, so Bob is a knave.\nThe answer is Bob.")
    assert score["checked"] == 0 and score["fraction"] is None
    meta = {"steps_v1": score}
    assert Rule("steps_v1.fraction == 1").evaluate(meta) == (False, "threshold:steps_v1.fraction == 1")
    assert Rule("steps_v1.fraction >= 0.5").evaluate(meta)[0] is False  # None fails every numeric comparison
    assert Rule("steps_v1.checked == 0 or steps_v1.fraction == 1").evaluate(meta) == (True, None)
    assert Rule("steps_v1.fraction == 1 or steps_v1.fraction == None").evaluate(meta) == (True, None)


def test_chain_breaks_count_a_step_that_does_not_start_from_the_previous_result():
    assert check_steps("3 + 4 = 7\n7 - 5 = 2")["breaks"] == 0
    broken = check_steps("3 + 4 = 7\n6 - 4 = 2")  # both steps right, but the chain jumped from 7 to 6
    assert (broken["fraction"], broken["links"], broken["breaks"]) == (1.0, 1, 1)
    # A variable substituted with a value other than the one found for it (b is 8, not 7).
    lookup = check_steps("We know a = 5.\nb = a + 3 = 5 + 3 = 8\nc = b - 1 = 7 - 1 = 6")
    assert (lookup["fraction"], lookup["links"], lookup["breaks"]) == (1.0, 2, 1)
    # Modulo 10 the next step may start from the reduced value.
    assert check_steps("3 × 4 = 12\n2 + 5 = 7", "Compute (3 × 4 + 5) mod 10.")["breaks"] == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gold_traces_of_every_built_in_family_have_no_wrong_step(family):
    checked = 0
    for i in range(60):
        rng = random.Random(i)
        problem, _, steps = FAMILIES[family].gen(rng, 1 + i % 5, i % 2 == 0, 50)
        score = check_steps("\n".join(steps), problem)
        assert score["correct"] == score["checked"], (problem, steps, score)
        checked += score["checked"]
    if family in ("arithmetic", "multiplication", "modular", "sequence", "unit_conversion"):
        assert checked >= 60  # families that compute with integers are actually checked


def test_scorer_reads_the_trace_or_the_completion():
    with_trace = Document(text="", id="a", metadata={"problem": "Compute 3 + 4.", "trace": "3 + 4 = 8"})
    from_completion = Document(text="", id="b", metadata={"completion": "<think>\n3 + 4 = 7\n</think>\n\\boxed{7}"})
    out = list(StepScorer().run([with_trace, from_completion]))
    assert [d.metadata["steps_v1"]["fraction"] for d in out] == [0.0, 1.0]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_rule_drops_wrong_steps_with_the_reason_and_the_account_balances(tmp_path):
    rows = [  # every answer is right: only the steps tell these traces apart
        rollout("Compute 3 + 4 - 5.", "2", "3 + 4 = 7\n7 - 5 = 2", "2", "p1", 0),
        rollout("Compute 3 + 4 - 5.", "2", "3 + 4 = 8\n8 - 6 = 2", "2", "p1", 1),
        rollout("Compute (3 × 4 + 5) mod 10.", "7", "3 × 4 = 12, and 12 mod 10 = 2\n2 + 5 = 7", "7", "p2", 0),
        rollout("Compute (3 × 4 + 5) mod 10.", "7", "3 × 4 = 3\n3 + 4 = 7", "7", "p2", 1),
        rollout("Compute 6 - 4.", "2", "Six take away four leaves two.", "2", "p3", 0),
    ]
    _write(tmp_path / "in" / "data" / "00000.jsonl", rows)
    # As a study file's `filters = { rule = ... }` table is loaded.
    rule = 'verify_v1 == "correct" and steps_v1.checked > 0 and steps_v1.fraction == 1'
    config = from_mapping(FilterConfig, {"rule": rule, "dedup": []}, "study.toml: [corpora.t.filters]")
    account = run_filters(tmp_path / "in", tmp_path / "out", config).account
    assert account.inputs == 5 and account.kept == 2
    assert account.dropped == {"threshold:steps_v1.fraction == 1": 2, "threshold:steps_v1.checked > 0": 1}
    assert account.inputs == account.kept + sum(account.dropped.values())
    kept = [json.loads(line) for line in (tmp_path / "out" / "data" / "00000.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in kept) == ["p1.0", "p2.0"]
    assert all(r["metadata"]["steps_v1"]["fraction"] == 1.0 for r in kept)
    rejects = [json.loads(line) for p in (tmp_path / "out" / "rejects").rglob("*.jsonl") for line in p.open()]
    assert {r["id"]: r["metadata"]["steps_v1"]["first_wrong"] for r in rejects} == {
        "p1.1": "3 + 4 = 8",
        "p2.1": "3 × 4 = 3",
        "p3.0": None,
    }
