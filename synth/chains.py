"""Chains of single-digit operations modulo 10: the rung below the other families, sized for tiny models.

Every number in a problem, a trace and an answer is one digit (0..9), so with the tokenizer's split
digits one number is one token, and every step is one fact out of a 10 × 10 table (iGSM keeps
numbers small the same way, with arithmetic mod 23). A problem chains ``difficulty + 1`` such
steps; the worked trace has one line per step (``7 + 5 = 2``), so "reasoning" here means composing
steps a model learns in its first minute. Three families share the generator interface of
:mod:`frontload.synth.families` (``gen(rng, difficulty, detailed, k) -> (problem, answer, steps)``):

- ``chain_add``: a running value moved by additions and subtractions;
- ``chain_mixed``: the same with multiplications as well;
- ``chain_vars``: named variables, each defined from an earlier one (from difficulty 3 on, not
  necessarily the one just before), so a step must first look up the value it builds on.

Each family has several surface forms (phrasings with symbols, words or a dial), limited by ``k``
like every other pool; the trace is the same plain computation whatever the surface form.
Invariants: the answer is a digit 0..9 equal to the chain evaluated mod 10; the same ``rng`` state
gives the same output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

MOD = 10  # one digit = one token; the answer is always a single digit
_SYMBOL = {"+": "+", "-": "-", "*": "×"}
_VERB = {"+": "add {d}", "-": "subtract {d}", "*": "multiply by {d}"}
_WORD = {"+": "plus", "-": "minus", "*": "times"}
_DIAL = {"+": "up {d}", "-": "down {d}"}
VAR_NAMES = ("a", "b", "c", "d", "e", "f", "g", "h", "p", "q", "r", "s", "u", "v", "w")


def _pick(rng: random.Random, pool: Sequence, k: int):
    # The same diversity knob as the other families' pools; kept here so this module imports no family module.
    return pool[rng.randrange(min(k, len(pool)))]


def apply(op: str, x: int, d: int) -> int:
    """One step ``x op d`` reduced mod 10."""
    return (x + d if op == "+" else x - d if op == "-" else x * d) % MOD


def _ops(rng: random.Random, n: int, kinds: str) -> list[tuple[str, int]]:
    # Operands 1..9 for + and -, 2..9 for ×: adding 0 or multiplying by 1 is a step that does nothing.
    return [
        (op, rng.randint(2, 9) if op == "*" else rng.randint(1, 9)) for op in (rng.choice(kinds) for _ in range(n))
    ]


def _left_to_right(start: int, ops: list[tuple[str, int]]) -> str:
    """The chain as an expression whose usual precedence gives the left-to-right order (parentheses before ×)."""
    expr, loose = str(start), False  # loose: the expression so far ends in an unparenthesized + or -
    for op, d in ops:
        if op == "*" and loose:
            expr, loose = f"({expr})", False
        expr += f" {_SYMBOL[op]} {d}"
        loose = loose or op != "*"
    return expr


def _run(start: int, ops: list[tuple[str, int]], detailed: bool) -> tuple[int, list[str]]:
    x, steps = start, []
    for op, d in ops:
        y = apply(op, x, d)
        raw = x + d if op == "+" else x - d if op == "-" else x * d
        steps.append(
            f"{x} {_SYMBOL[op]} {d} = {raw}, and {raw} mod {MOD} = {y}" if detailed else f"{x} {_SYMBOL[op]} {d} = {y}"
        )
        x = y
    return x, steps


def _chain(rng: random.Random, difficulty: int, detailed: bool, k: int, kinds: str) -> tuple[str, str, list[str]]:
    start = rng.randint(0, 9)
    ops = _ops(rng, difficulty + 1, kinds)
    expr = _left_to_right(start, ops)
    forms = [
        lambda: f"Compute ({expr}) mod {MOD}.",
        lambda: (
            f"Start with {start}, then "
            + ", then ".join(_VERB[op].format(d=d) for op, d in ops)
            + f". Working mod {MOD}, what is the result?"
        ),
        lambda: (
            f"Begin at {start} and apply, in order: "
            + ", ".join(f"{_WORD[op]} {d}" for op, d in ops)
            + f". What is the result modulo {MOD}?"
        ),
    ]
    if "*" not in kinds:  # a dial only turns; it cannot multiply
        forms.append(
            lambda: (
                f"A dial numbered 0 to 9 points at {start}. It turns "
                + ", then ".join(_DIAL[op].format(d=d) for op, d in ops)
                + ". Where does it point now?"
            )
        )
    problem = _pick(rng, forms, k)()
    value, lines = _run(start, ops, detailed)
    if detailed:
        lines.insert(0, f"We start at {start} and apply the {len(ops)} steps in order, reducing mod {MOD} after each.")
        total = start
        for op, d in ops:
            total = total + d if op == "+" else total - d if op == "-" else total * d
        lines.append(f"Check: {expr} = {total} without reducing, and {total} mod {MOD} = {total % MOD}.")
    return problem, str(value), lines


def gen_chain_add(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    """``difficulty + 1`` additions and subtractions of single digits mod 10."""
    return _chain(rng, difficulty, detailed, k, "+-")


def gen_chain_mixed(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    """``difficulty + 1`` additions, subtractions and multiplications of single digits mod 10."""
    return _chain(rng, difficulty, detailed, k, "+-*")


def gen_chain_vars(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    """Variables each defined as an earlier one plus, minus or times a digit mod 10; ask for the last."""
    n = difficulty + 1
    names = rng.sample(VAR_NAMES[: max(min(k, len(VAR_NAMES)), n + 1)], n + 1)
    values = [rng.randint(0, 9)]
    defs: list[tuple[str, int, str, int]] = []  # (name, index it builds on, op, digit)
    for i, (op, d) in enumerate(_ops(rng, n, "+-*"), start=1):
        # From difficulty 3 on a step may build on any earlier variable: the lookup is part of the task.
        src = i - 1 if difficulty < 3 else rng.randrange(i)
        defs.append((names[i], src, op, d))
        values.append(apply(op, values[src], d))
    word_defs = [f"{name} is {names[s]} {_WORD[op]} {d}" for name, s, op, d in defs]
    sym_defs = [f"{name} = {names[s]} {_SYMBOL[op]} {d}" for name, s, op, d in defs]
    last = names[-1]
    forms = [
        lambda: f"Let {names[0]} = {values[0]}, " + ", ".join(sym_defs) + f", all mod {MOD}. What is {last}?",
        lambda: f"{names[0]} is {values[0]}. " + ". ".join(word_defs) + f". Working mod {MOD}, find {last}.",
        lambda: f"Given {names[0]} = {values[0]} and " + " and ".join(sym_defs) + f" (mod {MOD}), compute {last}.",
    ]
    problem = _pick(rng, forms, k)()
    steps = [f"We know {names[0]} = {values[0]}; each definition uses a value found before it."] if detailed else []
    for (name, s, op, d), value in zip(defs, values[1:]):
        x = values[s]
        if detailed:
            raw = x + d if op == "+" else x - d if op == "-" else x * d
            steps.append(
                f"{name} = {names[s]} {_SYMBOL[op]} {d} = {x} {_SYMBOL[op]} {d} = {raw}, which is {value} mod {MOD}"
            )
        else:
            steps.append(f"{name} = {x} {_SYMBOL[op]} {d} = {value}")
    if detailed:
        steps.append(f"So {last} = {values[-1]}.")
    return problem, str(values[-1]), steps
