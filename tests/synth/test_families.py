"""Built-in families: exact answers that math-verify accepts, correct gold traces, determinism, diversity, holdout."""

import json
import random
import re
from fractions import Fraction
from math import gcd

import pytest
from math_verify import parse, verify

from frontload.synth.families import FAMILIES, NAMES
from frontload.synth.sources import (
    GeneratorSource,
    in_holdout,
    iter_problems,
    problem_id,
    write_eval_tasks,
    write_problems,
)


def boxed(s: str):
    # No signal timeout: on a loaded machine a tuple can take longer than math-verify's default to parse.
    return parse(f"\\boxed{{{s}}}", parsing_timeout=None)


def _wrong(family: str, answer: str) -> str:
    if family == "sorting":
        items = answer.strip("()").split(", ")
        return "(" + ", ".join(items[1:] + items[:1]) + ")"
    if family == "logic":
        names = set(answer.split(", "))
        other = next(n for n in NAMES if n not in names)
        return ", ".join(sorted(names | {other}))
    return str(Fraction(answer.replace(" ", "")) + 1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_answers_verify_with_math_verify(family):
    gen = FAMILIES[family].gen
    for difficulty in range(1, 6):
        for i in range(2):
            problem, answer, steps = gen(random.Random(1000 * difficulty + i), difficulty, i % 2 == 0, 1 << 30)
            assert problem and answer and steps
            gold = boxed(answer)
            assert verify(gold, boxed(answer), timeout_seconds=None), (family, answer, gold)
            wrong = _wrong(family, answer)
            assert not verify(gold, boxed(wrong), timeout_seconds=None), (family, answer, wrong)


def test_logic_names_are_distinguishable_by_math_verify():
    # math-verify reads a name as a product of letters, so two names with the same letters would compare equal.
    keys = {"".join(sorted(n.lower())) for n in NAMES}
    assert len(keys) == len(NAMES)


def _nums(text):
    return [int(x) for x in re.findall(r"-?\d+", text)]


def test_gold_answers_are_correct():
    rng = random.Random(7)
    for _ in range(200):
        d = rng.randint(1, 5)
        problem, answer, _ = FAMILIES["arithmetic"].gen(rng, d, False, 1 << 30)
        expr = re.search(r"[\d(][\d\s+\-*×()]*[\d)]", problem).group(0).replace("×", "*")
        assert eval(expr) == int(answer), problem  # noqa: S307 - digits and operators only

        problem, answer, _ = FAMILIES["sorting"].gen(rng, d, False, 1 << 30)
        nums = _nums(problem.split(":", 1)[1] if ":" in problem else problem)
        order = sorted(nums, reverse="descending" in problem)
        assert answer == "(" + ", ".join(map(str, order)) + ")"

        problem, answer, _ = FAMILIES["gcd_lcm"].gen(rng, d, False, 1 << 30)
        a, b = _nums(problem)
        assert int(answer) == (a * b // gcd(a, b) if "least" in problem else gcd(a, b))

        problem, answer, _ = FAMILIES["linear_equation"].gen(rng, d, False, 1 << 30)
        import sympy
        from sympy.parsing.sympy_parser import (
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )

        left, right = problem.split(" = ")
        for marker in (": ", "if ", "that ", "satisfies ", "equation "):
            left = left.rsplit(marker, 1)[-1]
        eq = f"{left} = {right.rstrip('.?')}"
        var = re.findall(r"(?<![a-z])([a-z])(?![a-z])", eq)[0]
        tr = standard_transformations + (implicit_multiplication_application,)
        lhs, rhs = (parse_expr(s, transformations=tr) for s in eq.split("="))
        assert sympy.solve(lhs - rhs, sympy.Symbol(var)) == [int(answer)], problem


def test_modular_trace_ends_at_the_answer():
    for i in range(100):
        problem, answer, steps = FAMILIES["modular"].gen(random.Random(i), 4, False, 1 << 30)
        a, e, m = _nums(problem)[:3]
        assert int(answer) == pow(a, e, m), problem


def test_same_seed_gives_byte_identical_corpus(tmp_path):
    args = dict(families=sorted(FAMILIES), n=300, seed=11, difficulty=(1, 5))
    m1 = write_problems(tmp_path / "a", **args)
    m2 = write_problems(tmp_path / "b", **args)
    assert (tmp_path / "a/data/00000.jsonl").read_bytes() == (tmp_path / "b/data/00000.jsonl").read_bytes()
    assert m1.fingerprint == m2.fingerprint and m1.counts["documents"] == 300
    assert sum(v for k, v in m1.counts.items() if k.startswith("family:")) == 300
    other = write_problems(tmp_path / "c", **{**args, "seed": 12})
    assert other.fingerprint != m1.fingerprint
    rows = [json.loads(x) for x in (tmp_path / "a/data/00000.jsonl").read_text().splitlines()]
    for row in rows:
        md = row["metadata"]
        assert row["id"] == problem_id(md["family"], md["problem"])
        assert row["text"] == md["prompt"] + md["response"]
        assert md["source"] == f"generator:{md['family']}" and md["trace"] in md["response"]
        assert f"\\boxed{{{md['answer']}}}" in md["response"]
    assert len({r["id"] for r in rows}) == len(rows)


def test_blocks_drawn_separately_match_a_full_run():
    from frontload.synth.sources import BLOCK, draw_block

    src = GeneratorSource(families=["fractions", "word_problem"], n=3 * BLOCK, seed=3)
    full = [d.id for d in iter_problems(src)]
    shards = [draw_block(src, b) for b in (2, 0, 1)]  # any order, e.g. one block per rank
    assert [d.id for b in (1, 2, 0) for d, _ in shards[b]] == full  # no duplicates here, so draw i is problem i


def test_templates_knob_limits_surface_forms():
    def shapes(templates):
        src = GeneratorSource(
            families=["word_problem", "arithmetic", "unit_conversion"], n=300, seed=5, templates=templates
        )
        return {re.sub(r"[-\d.,/()×*+ ]+", "#", d.metadata["problem"]) for d in iter_problems(src)}

    assert len(shapes(1)) * 2 < len(shapes(None))


def test_detailed_style_gives_longer_traces_for_the_same_problems():
    concise = list(iter_problems(GeneratorSource(families=sorted(FAMILIES), n=60, seed=2)))
    detailed = list(iter_problems(GeneratorSource(families=sorted(FAMILIES), n=60, seed=2, style="detailed")))
    assert [d.id for d in concise] == [d.id for d in detailed]
    assert sum(len(d.metadata["trace"]) for d in detailed) > 1.5 * sum(len(d.metadata["trace"]) for d in concise)


def test_eval_tasks_never_appear_in_training(tmp_path):
    # A small problem space (one surface form, easiest level) makes collisions likely if nothing prevented them.
    fams = ["gcd_lcm", "counting"]
    write_problems(tmp_path / "train", families=fams, n=1500, seed=0, difficulty=1, templates=1)
    train_ids = {json.loads(x)["id"] for x in (tmp_path / "train/data/00000.jsonl").read_text().splitlines()}
    path = write_eval_tasks(tmp_path / "eval.jsonl", families=fams, n=40, seed=0, difficulty=1, templates=1)
    tasks = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(tasks) == 40 and {"question", "answer", "id"} <= set(tasks[0])
    assert all(t["solution"] and t["answer"] in t["solution"] for t in tasks)  # the gold worked solution
    assert all(in_holdout(t["id"], 0.05) for t in tasks)
    assert not train_ids & {t["id"] for t in tasks}


def test_exhausted_problem_space_is_reported():
    from frontload.core.errors import FrontloadError

    with pytest.raises(FrontloadError, match="fewer than"):
        list(iter_problems(GeneratorSource(families=["gcd_lcm"], n=5000, difficulty=1, templates=1)))
