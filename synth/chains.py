"""Chains of single-digit steps: the rung below the other families, sized for models of a few million parameters.

Every number in a problem, a trace and an answer is one digit (0..9), so with the tokenizer's split
digits one number is one token, and every step is one fact from a 10 × 10 table (iGSM keeps numbers
small the same way, with arithmetic mod 23). A problem chains ``difficulty + 1`` steps; the worked
trace has one line per step (``7 - 5 = 2``), so "reasoning" here means composing steps. Three
families share the generator interface of :mod:`frontload.synth.families`
(``gen(rng, difficulty, detailed, k) -> (problem, answer, steps)``):

- ``chain_add``: a running value moved by additions and subtractions that keep it within 0..9
  (no wrap-around: plain single-digit sums are what a tiny model learns first; modular sums it
  learns far more slowly, as the grokking literature found);
- ``chain_vars``: the same steps on named variables, each defined from an earlier one (from
  difficulty 3 on, not necessarily the one just before), so a step first looks up its input;
- ``chain_mixed``: +, - and × modulo 10: the harder rung, a step wraps around.

Each family has several surface forms (symbols, verbs, words, a dial), limited by ``k`` like every
other pool; the first form is the plain expression, so ``templates=1`` asks every problem the same
way. The trace is the same computation whatever the surface form.
Invariants: the answer is a digit 0..9 equal to the chain evaluated left to right (mod 10 for
``chain_mixed``; ``chain_add`` and ``chain_vars`` never leave 0..9); the same ``rng`` state gives
the same output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

MOD = 10  # chain_mixed wraps around mod 10, so its answer is a single digit too
_SYMBOL = {"+": "+", "-": "-", "*": "×"}
_VERB = {"+": "add {d}", "-": "subtract {d}", "*": "multiply by {d}"}
_WORD = {"+": "plus", "-": "minus", "*": "times"}
_DIAL = {"+": "up {d}", "-": "down {d}"}
VAR_NAMES = ("a", "b", "c", "d", "e", "f", "g", "h", "p", "q", "r", "s", "u", "v", "w")


def _pick(rng: random.Random, pool: Sequence, k: int):
    # The same diversity knob as the other families' pools; kept here so this module imports no family module.
    return pool[rng.randrange(min(k, len(pool)))]


def raw(op: str, x: int, d: int) -> int:
    """``x op d`` in the integers."""
    return x + d if op == "+" else x - d if op == "-" else x * d


def _step_in_range(rng: random.Random, x: int) -> tuple[str, int]:
    """An addition or subtraction of 1..9 that keeps ``x`` within 0..9."""
    op = rng.choice("+-") if 0 < x < 9 else "+" if x == 0 else "-"
    return op, rng.randint(1, 9 - x if op == "+" else x)


def _step_mod(rng: random.Random, x: int) -> tuple[str, int]:
    # Operands 1..9 for + and -, 2..9 for ×: adding 0 or multiplying by 1 is a step that does nothing.
    op = rng.choice("+-*")
    return op, rng.randint(2, 9) if op == "*" else rng.randint(1, 9)


def _left_to_right(start: int, ops: list[tuple[str, int]]) -> str:
    """The chain as an expression whose usual precedence gives the left-to-right order (parentheses before ×)."""
    expr, loose = str(start), False  # loose: the expression so far ends in an unparenthesized + or -
    for op, d in ops:
        if op == "*" and loose:
            expr, loose = f"({expr})", False
        expr += f" {_SYMBOL[op]} {d}"
        loose = loose or op != "*"
    return expr


def _chain(rng: random.Random, difficulty: int, detailed: bool, k: int, wrap: bool) -> tuple[str, str, list[str]]:
    start = x = rng.randint(0, 9)
    ops, values = [], []
    for _ in range(difficulty + 1):
        op, d = (_step_mod if wrap else _step_in_range)(rng, x)
        x = raw(op, x, d) % MOD
        ops.append((op, d))
        values.append(x)
    expr = _left_to_right(start, ops)
    mod = f" mod {MOD}" if wrap else ""
    forms = [
        lambda: f"Compute ({expr}){mod}." if wrap else f"Compute {expr}.",
        lambda: (
            f"Start with {start}, then "
            + ", then ".join(_VERB[op].format(d=d) for op, d in ops)
            + (f". Working mod {MOD}, what is the result?" if wrap else ". What is the result?")
        ),
        lambda: (
            f"Begin at {start} and apply, in order: "
            + ", ".join(f"{_WORD[op]} {d}" for op, d in ops)
            + f". What is the result{mod}?"
        ),
    ]
    if not wrap:
        forms.append(
            lambda: (
                f"A counter shows {start}. It goes "
                + ", then ".join(_DIAL[op].format(d=d) for op, d in ops)
                + ". What does it show now?"
            )
        )
    problem = _pick(rng, forms, k)()
    lines, x = [], start
    for (op, d), y in zip(ops, values):
        r = raw(op, x, d)
        if detailed and wrap:
            lines.append(f"{x} {_SYMBOL[op]} {d} = {r}, and {r} mod {MOD} = {y}")
        elif detailed:
            lines.append(f"{x} {_SYMBOL[op]} {d} = {y}, so the value is now {y}")
        else:
            lines.append(f"{x} {_SYMBOL[op]} {d} = {y}")
        x = y
    if detailed:
        how = f"reducing mod {MOD} after each" if wrap else "the value stays between 0 and 9"
        lines.insert(0, f"We start at {start} and apply the {len(ops)} steps in order; {how}.")
        total = start
        for op, d in ops:
            total = raw(op, total, d)
        tail = f" without reducing, and {total} mod {MOD} = {total % MOD}" if wrap else ""
        lines.append(f"Check: {expr} = {total}{tail}.")
    return problem, str(x), lines


def gen_chain_add(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    """``difficulty + 1`` single-digit additions and subtractions that keep the value within 0..9."""
    return _chain(rng, difficulty, detailed, k, wrap=False)


def gen_chain_mixed(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    """``difficulty + 1`` single-digit additions, subtractions and multiplications mod 10."""
    return _chain(rng, difficulty, detailed, k, wrap=True)


def gen_chain_vars(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    """Variables each defined as an earlier one plus or minus a digit (staying within 0..9); ask for the last."""
    n = difficulty + 1
    names = rng.sample(VAR_NAMES[: max(min(k, len(VAR_NAMES)), n + 1)], n + 1)
    values = [rng.randint(0, 9)]
    defs: list[tuple[str, int, str, int]] = []  # (name, index it builds on, op, digit)
    for i in range(1, n + 1):
        # From difficulty 3 on a step may build on any earlier variable: the lookup is part of the task.
        src = i - 1 if difficulty < 3 else rng.randrange(i)
        op, d = _step_in_range(rng, values[src])
        defs.append((names[i], src, op, d))
        values.append(raw(op, values[src], d))
    word_defs = [f"{name} is {names[s]} {_WORD[op]} {d}" for name, s, op, d in defs]
    sym_defs = [f"{name} = {names[s]} {_SYMBOL[op]} {d}" for name, s, op, d in defs]
    last = names[-1]
    forms = [
        lambda: f"Let {names[0]} = {values[0]}, " + ", ".join(sym_defs) + f". What is {last}?",
        lambda: f"{names[0]} is {values[0]}. " + ". ".join(word_defs) + f". Find {last}.",
        lambda: f"Given {names[0]} = {values[0]} and " + " and ".join(sym_defs) + f", compute {last}.",
    ]
    problem = _pick(rng, forms, k)()
    steps = [f"We know {names[0]} = {values[0]}; each definition uses a value found before it."] if detailed else []
    for (name, s, op, d), value in zip(defs, values[1:]):
        x = values[s]
        if detailed:
            steps.append(f"{name} = {names[s]} {_SYMBOL[op]} {d} = {x} {_SYMBOL[op]} {d} = {value}")
        else:
            steps.append(f"{name} = {x} {_SYMBOL[op]} {d} = {value}")
    if detailed:
        steps.append(f"So {last} = {values[-1]}.")
    return problem, str(values[-1]), steps
