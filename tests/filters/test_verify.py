"""verify_answer: math-verify equivalences, textual and multiple-choice answers, modes, thread safety."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from frontload.filters.verify import verify_answer

EQUIVALENT = [
    ("1/2", "0.5"),
    (r"\frac{3}{4}", "0.75"),
    ("3/4", r"\dfrac{3}{4}"),
    ("50%", "0.5"),
    (r"50\%", "1/2"),
    ("3", "x=3"),
    ("x=3", "3"),
    ("1000", "1,000"),
    (r"\boxed{7}", "7"),
    (r"\sqrt{2}", "2^{1/2}"),
    ("x^2+2x+1", "(x+1)^2"),
    (r"\{1,2\}", r"\{2,1\}"),
    ("1, 3, 7", "1,3,7"),
    ("knight", "Knight."),
    ("Alice, Bob", "alice,bob"),
    ("yes", "Yes"),
    ("B", "(B)"),
    ("B", "B) 42"),
    ("B", "The answer is B"),
]

DIFFERENT = [
    ("1/2", "0.6"),
    ("0.3333", "1/3"),
    ("knight", "knave"),
    ("dog", "god"),  # as sympy symbols these would multiply to the same product
    ("1, 3, 7", "7, 3, 1"),  # a sorted-list answer keeps its order
    ("1, 3, 7", "1, 3"),
    ("B", "C"),
    ("12", "12.5"),
]


@pytest.mark.parametrize(("gold", "prediction"), EQUIVALENT)
def test_equivalent_answers_are_correct(gold, prediction):
    assert verify_answer(gold, prediction) == "correct"


@pytest.mark.parametrize(("gold", "prediction"), DIFFERENT)
def test_different_answers_are_wrong(gold, prediction):
    assert verify_answer(gold, prediction) == "wrong"


@pytest.mark.parametrize("prediction", [None, "", "   ", "9^{9^{9^9}}", "99999999!", "x" * 5000])
def test_missing_or_runaway_predictions_are_unparseable_not_hangs(prediction):
    assert verify_answer("9", prediction) == "unparseable"


def test_modes():
    assert verify_answer("7", "$7$", "exact") == "correct"
    assert verify_answer("7", "7.0", "exact") == "wrong"
    assert verify_answer("12", "12.0000001", "numeric") == "correct"
    assert verify_answer("0.3333", "1/3", "numeric", rel_tol=1e-3) == "correct"
    assert verify_answer("0.3333", "1/3", "numeric") == "wrong"
    assert verify_answer("12", "twelve", "numeric") == "unparseable"
    assert verify_answer("A", "a", "choice") == "correct"
    assert verify_answer("A", "I choose option (C)", "choice") == "wrong"
    # A bad gold never raises: the record is counted as unparseable.
    assert verify_answer("not a number", "3", "numeric") == "unparseable"


def test_threads_give_the_same_verdicts():
    cases = EQUIVALENT + DIFFERENT + [("9", "9^{9^{9^9}}")]
    serial = [verify_answer(g, p) for g, p in cases]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: verify_answer(*c), cases * 3))
    assert threaded == serial * 3
