"""Chain families: answers recomputed from the problem text, difficulty = chain length, one digit per number."""

import random
import re

import pytest

from frontload.synth.families import FAMILIES
from frontload.synth.sources import GeneratorSource, in_holdout, iter_problems

CHAINS = ("chain_add", "chain_mixed", "chain_vars")
_STEP = {
    "add": "+",
    "plus": "+",
    "up": "+",
    "subtract": "-",
    "minus": "-",
    "down": "-",
    "multiply by": "*",
    "times": "*",
}


def _recompute(family: str, problem: str) -> int:
    """The answer read back from the problem text alone, evaluated with Python's own operators."""
    wrap = family == "chain_mixed"  # the others must stay within 0..9 without any reduction

    def reduce(value: int) -> int:
        assert wrap or 0 <= value <= 9, (problem, value)
        return value % 10

    if family == "chain_vars":
        env: dict[str, int] = {}
        for name, rhs in re.findall(
            r"\b([a-z]) (?:=|is) ([a-z0-9](?: (?:[-+]|plus|minus) \d)?)(?=[,.]|$| and)", problem
        ):
            rhs = rhs.replace("plus", "+").replace("minus", "-")
            env[name] = reduce(eval(rhs, {}, dict(env)))  # noqa: S307 - a variable, an operator and a digit
        return env[re.search(r"(?:What is|Find|compute) ([a-z])[?.]$", problem).group(1)]
    compute = re.fullmatch(r"Compute \((.*)\) mod 10\.", problem) or re.fullmatch(r"Compute ([^a-z]*)\.", problem)
    if compute:  # the usual precedence of the printed expression must give the chain's order
        return reduce(eval(compute.group(1).replace("×", "*")))  # noqa: S307 - digits, operators, parentheses
    value = int(re.search(r"(?:with|at|shows) (\d)", problem).group(1))
    for word, digit in re.findall(r"(add|subtract|multiply by|plus|minus|times|up|down) (\d)", problem):
        value = reduce(eval(f"{value} {_STEP[word]} {digit}"))  # noqa: S307
    return value


@pytest.mark.parametrize("family", CHAINS)
def test_answers_match_the_problem_text(family):
    rng = random.Random(3)
    forms = set()
    for _ in range(400):
        difficulty = rng.randint(1, 5)
        problem, answer, _ = FAMILIES[family].gen(rng, difficulty, rng.random() < 0.5, 1 << 30)
        assert int(answer) == _recompute(family, problem), problem
        forms.add(re.sub(r"\d|\b[a-z]\b", "#", problem)[:12])
    assert len(forms) >= 3  # several surface forms, so held-out tasks can differ in phrasing


@pytest.mark.parametrize("family", CHAINS)
def test_difficulty_is_chain_length_and_every_number_is_one_digit(family):
    rng = random.Random(5)
    for difficulty in range(1, 6):
        problem, answer, steps = FAMILIES[family].gen(rng, difficulty, False, 1 << 30)
        assert len(steps) == difficulty + 1, (problem, steps)
        # The modulus 10 is the only number wider than one digit (one number = one token).
        assert all(len(n) == 1 for n in re.findall(r"\d+", problem.replace("mod 10", "")))
        assert all(len(n) == 1 for n in re.findall(r"\d+", "\n".join(steps))), steps
        assert steps[-1].endswith(f"= {answer}")  # the last step is the answer


@pytest.mark.parametrize("family", CHAINS)
def test_detailed_trace_restates_each_step_and_is_deterministic(family):
    a = FAMILIES[family].gen(random.Random(11), 3, True, 1 << 30)
    b = FAMILIES[family].gen(random.Random(11), 3, True, 1 << 30)
    concise = FAMILIES[family].gen(random.Random(11), 3, False, 1 << 30)
    assert a == b
    assert a[0] == concise[0] and a[1] == concise[1]  # same problem and answer, longer trace
    assert len("\n".join(a[2])) > len("\n".join(concise[2]))


def test_templates_knob_limits_chain_surface_forms():
    one = GeneratorSource(families=["chain_add"], n=200, difficulty=(1, 3), templates=1, seed=4)
    assert all(re.fullmatch(r"Compute [\d +-]+\.", d.metadata["problem"]) for d in iter_problems(one))


def test_hundreds_of_held_out_questions_of_three_steps():
    # An eval task of 300 three-step questions must fit the holdout slice and stay out of training.
    train = {d.id for d in iter_problems(GeneratorSource(families=["chain_add"], n=3000, difficulty=(2, 2), seed=1))}
    held = list(iter_problems(GeneratorSource(families=["chain_add"], n=300, difficulty=(2, 2), seed=9), split="eval"))
    assert len(held) == 300
    assert all(in_holdout(d.id, 0.05) and d.id not in train for d in held)


def test_generated_corpora_and_tasks_are_keyed_by_the_generators_version(tmp_path, monkeypatch):
    # A workspace built before a family changed what it writes must not be reused as if it were current.
    from pathlib import Path

    from frontload import runner
    from frontload.study_file import load_study

    study = load_study(Path(__file__).parents[1] / "frontload" / "tiny_study.toml")
    before = {s.id: s.fingerprint for s in runner.build_plan(study).ordered()}
    monkeypatch.setattr(runner, "GENERATORS_VERSION", runner.GENERATORS_VERSION + 1)
    after = {s.id: s.fingerprint for s in runner.build_plan(study).ordered()}
    changed = {k for k in before if before[k] != after[k]}
    assert {"corpus:reasoning", "corpus:hq", "task:heldout"} <= changed
    assert "corpus:web" not in changed  # packaged text does not come from the generators
