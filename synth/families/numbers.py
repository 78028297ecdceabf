"""Number families: arithmetic, long multiplication, linear equations, fractions, modular arithmetic,
gcd/lcm and number sequences.
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import gcd

from frontload.synth.families.common import VARIABLES, _pick

# --------------------------------------------------------------------------------------------------
# arithmetic: multi-step expressions with + - * and parentheses


_PREC = {"+": 1, "-": 1, "*": 2}


def _tree(rng: random.Random, n_ops: int, hi: int):
    if n_ops == 0:
        return rng.randint(1, hi)
    left_ops = rng.randint(0, n_ops - 1)
    op = rng.choice("+-*") if n_ops <= 3 else rng.choice("++--*")
    left = _tree(rng, left_ops, hi)
    right = _tree(rng, n_ops - 1 - left_ops, hi if op != "*" else min(hi, 12))
    return [op, left, right]


def _render(node, times: str, done: dict) -> str:
    if isinstance(node, int):
        return str(node) if node >= 0 else f"({node})"
    if id(node) in done:
        v = done[id(node)]
        return str(v) if v >= 0 else f"({v})"
    op, left, right = node
    ls, rs = _render(left, times, done), _render(right, times, done)
    if isinstance(left, list) and id(left) not in done and _PREC[left[0]] < _PREC[op]:
        ls = f"({ls})"
    if (
        isinstance(right, list)
        and id(right) not in done
        and (_PREC[right[0]] < _PREC[op] or (op == "-" and _PREC[right[0]] == 1))
    ):
        rs = f"({rs})"
    return f"{ls} {times if op == '*' else op} {rs}"


def _eval_steps(node, times: str, done: dict, steps: list, root, detailed: bool) -> int:
    if isinstance(node, int):
        return node
    op, left, right = node
    a = _eval_steps(left, times, done, steps, root, detailed)
    b = _eval_steps(right, times, done, steps, root, detailed)
    v = a + b if op == "+" else a - b if op == "-" else a * b
    sa = str(a) if a >= 0 else f"({a})"
    sb = str(b) if b >= 0 else f"({b})"
    done[id(node)] = v
    line = f"{sa} {times if op == '*' else op} {sb} = {v}"
    if detailed and node is not root:
        line += f", so the expression becomes {_render(root, times, done)}"
    steps.append(line)
    return v


def gen_arithmetic(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    times = _pick(rng, ("*", "×"), k)
    tree = _tree(rng, difficulty + 1, 10 * difficulty)
    while isinstance(tree, int):
        tree = _tree(rng, difficulty + 1, 10 * difficulty)
    expr = _render(tree, times, {})
    phrase = _pick(
        rng,
        (
            "Compute {e}.",
            "What is the value of {e}?",
            "Evaluate {e}.",
            "Calculate: {e}",
            "Find the result of {e}.",
            "Work out {e}.",
            "Simplify {e} to a single number.",
            "What number is {e} equal to?",
        ),
        k,
    )
    steps: list[str] = []
    if detailed:
        steps.append(f"We need the value of {expr}.")
        steps.append(
            "Order of operations: parentheses first, then multiplication, then addition and subtraction from left to right."
        )
    value = _eval_steps(tree, times, {}, steps, tree, detailed)
    if detailed:
        steps.append(f"Every operation has been carried out, so {expr} = {value}.")
    return phrase.format(e=expr), str(value), steps


# --------------------------------------------------------------------------------------------------
# multiplication: long multiplication and exact long division


def gen_multiplication(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    da, db = ((2, 1), (3, 2), (3, 3), (4, 3), (5, 4))[difficulty - 1]
    if rng.random() < 0.5:
        a = rng.randint(10 ** (da - 1), 10**da - 1)
        b = rng.randint(max(2, 10 ** (db - 1)), 10**db - 1)
        sym = _pick(rng, ("×", "*", "times"), k)
        phrase = _pick(
            rng,
            ("What is {a} {s} {b}?", "Multiply {a} by {b}.", "Compute the product {a} {s} {b}.", "Find {a} {s} {b}."),
            k,
        )
        steps = [f"We multiply {a} by each digit of {b} and add the partial products."] if detailed else []
        total = 0
        for place, digit in enumerate(reversed(str(b))):
            part = a * int(digit) * 10**place
            total += part
            steps.append(f"{a} × {int(digit) * 10**place} = {part}")
        if len(str(b)) > 1:
            parts = " + ".join(str(a * int(d) * 10**p) for p, d in enumerate(reversed(str(b))))
            steps.append(f"{parts} = {total}")
        if detailed:
            steps.append(f"Check with the other order: {b} × {a} = {b * a}, the same.")
        return phrase.format(a=a, b=b, s=sym), str(total), steps
    divisor = rng.randint(max(2, 10 ** (db - 1)), 10**db - 1)
    quotient = rng.randint(10 ** (da - 1), 10**da - 1)
    dividend = divisor * quotient
    sym = _pick(rng, ("÷", "/", "divided by"), k)
    phrase = _pick(
        rng,
        ("What is {n} {s} {d}?", "Divide {n} by {d}.", "Compute {n} {s} {d}.", "How many times does {d} go into {n}?"),
        k,
    )
    steps = [f"Long division of {dividend} by {divisor}, one digit of the dividend at a time."] if detailed else []
    rem, digits = 0, []
    for ch in str(dividend):
        cur = rem * 10 + int(ch)
        q = cur // divisor
        rem = cur - q * divisor
        if digits or q:
            steps.append(f"{cur} ÷ {divisor} = {q}, remainder {rem}")
        digits.append(str(q))
    steps.append(f"The quotient digits give {quotient} with remainder 0.")
    if detailed:
        steps.append(f"Check: {quotient} × {divisor} = {quotient * divisor}.")
    return phrase.format(n=dividend, d=divisor, s=sym), str(quotient), steps


# --------------------------------------------------------------------------------------------------
# linear equations with one unknown and an integer solution


def _lin(a: int, b: int, v: str) -> str:
    """Text of a*v + b with tidy signs."""
    head = v if a == 1 else f"-{v}" if a == -1 else f"{a}{v}"
    if b == 0:
        return head
    return f"{head} + {b}" if b > 0 else f"{head} - {-b}"


def gen_linear_equation(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    v = _pick(rng, VARIABLES, k)
    hi = 5 * difficulty + 5
    x = rng.randint(-hi, hi)
    a = rng.choice([i for i in range(-difficulty - 2, difficulty + 3) if i not in (0,)])
    b = rng.randint(-hi, hi)
    if difficulty <= 2:
        c, e = 0, a * x + b
        lhs, rhs = _lin(a, b, v), str(e)
    else:
        c = rng.choice([i for i in range(-difficulty - 2, difficulty + 3) if i not in (0, a)])
        e = (a - c) * x + b
        lhs, rhs = _lin(a, b, v), _lin(c, e, v)
        if difficulty == 5:  # a(v + p) + q form on the left
            p = rng.randint(1, 6)
            q = b - a * p
            lhs = f"{a}({v} + {p})" + (f" + {q}" if q > 0 else f" - {-q}" if q < 0 else "")
    eq = f"{lhs} = {rhs}"
    phrase = _pick(
        rng,
        (
            "Solve for {v}: {eq}",
            "Find {v} if {eq}.",
            "What value of {v} satisfies {eq}?",
            "Solve the equation {eq}.",
            "Determine {v} given that {eq}.",
        ),
        k,
    )
    steps = [f"We want the value of {v} that makes both sides of {eq} equal."] if detailed else []
    if difficulty == 5:
        steps.append(f"Expand: {lhs} = {_lin(a, b, v)}")
    if c:
        steps.append(f"Subtract {_lin(c, 0, v)} from both sides: {_lin(a - c, b, v)} = {e}")
    ac = a - c
    steps.append(
        f"Subtract {b} from both sides: {_lin(ac, 0, v)} = {e - b}"
        if b >= 0
        else f"Add {-b} to both sides: {_lin(ac, 0, v)} = {e - b}"
    )
    if ac != 1:
        steps.append(f"Divide both sides by {ac}: {v} = {e - b} / {ac} = {x}")
    if detailed:
        left_val, right_val = a * x + b, c * x + e
        steps.append(
            f"Check: with {v} = {x} the left side is {left_val} and the right side is {right_val}; they agree."
        )
    return phrase.format(v=v, eq=eq), str(x), steps


# --------------------------------------------------------------------------------------------------
# fractions


def _frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def gen_fractions(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    n_terms = 2 if difficulty <= 3 else 3
    max_den = (6, 10, 12, 12, 16)[difficulty - 1]
    ops = {1: "+", 2: "+-", 3: "*/", 4: "+-", 5: "+-*"}[difficulty]
    terms = [Fraction(rng.randint(1, max_den - 1), rng.randint(2, max_den)) for _ in range(n_terms)]
    chosen = [rng.choice(ops) for _ in range(n_terms - 1)]
    words = {"+": "+", "-": "-", "*": "×", "/": "÷"}
    raw = [f"{t.numerator}/{t.denominator}" for t in terms]
    expr = raw[0]
    for op, r in zip(chosen, raw[1:]):
        expr += f" {words[op]} {r}"
    phrase = _pick(
        rng,
        (
            "Compute {e}. Give the answer as a fraction in lowest terms.",
            "What is {e}?",
            "Simplify {e}.",
            "Evaluate {e} and reduce the result.",
            "Find {e} in simplest form.",
        ),
        k,
    )
    steps = (
        [
            f"We evaluate {expr} from left to right and reduce at the end."
            if "*" not in chosen
            else f"We evaluate {expr}; multiplication comes before addition and subtraction."
        ]
        if detailed
        else []
    )
    # respect precedence: fold multiplications/divisions first
    vals, pending = [terms[0]], []
    for op, t in zip(chosen, terms[1:]):
        if op in "*/":
            a = vals.pop()
            r = a * t if op == "*" else a / t
            steps.append(
                f"{_frac(a)} × {_frac(t)} = {a.numerator * t.numerator}/{a.denominator * t.denominator} = {_frac(r)}"
                if op == "*"
                else f"{_frac(a)} ÷ {_frac(t)} = {_frac(a)} × {t.denominator}/{t.numerator} = {_frac(r)}"
            )
            vals.append(r)
        else:
            pending.append(op)
            vals.append(t)
    acc = vals[0]
    for op, t in zip(pending, vals[1:]):
        lcd = acc.denominator * t.denominator // gcd(acc.denominator, t.denominator)
        an, tn = acc.numerator * (lcd // acc.denominator), t.numerator * (lcd // t.denominator)
        r = acc + t if op == "+" else acc - t
        raw_num = an + tn if op == "+" else an - tn
        steps.append(
            f"Common denominator of {_frac(acc)} and {_frac(t)} is {lcd}: {an}/{lcd} {op} {tn}/{lcd} = {raw_num}/{lcd}"
        )
        g = gcd(abs(raw_num), lcd)
        if g > 1:
            steps.append(f"Divide numerator and denominator by {g}: {raw_num}/{lcd} = {_frac(r)}")
        acc = r
    if detailed:
        steps.append(
            f"Check: as decimals the result is about {float(acc):.4f}, and {_frac(acc)} cannot be reduced further."
        )
    return phrase.format(e=expr), _frac(acc), steps


# --------------------------------------------------------------------------------------------------
# modular arithmetic


def gen_modular(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    m = rng.randint(3, 6 + 6 * difficulty)
    if difficulty <= 2:
        a, b, c = rng.randint(10, 50 * difficulty), rng.randint(10, 50 * difficulty), rng.randint(0, 30)
        phrase = _pick(
            rng,
            (
                "What is the remainder when {a} × {b} + {c} is divided by {m}?",
                "Compute ({a} × {b} + {c}) mod {m}.",
                "Find ({a} * {b} + {c}) modulo {m}.",
            ),
            k,
        )
        steps = [f"Reduce each number modulo {m} first so the numbers stay small."] if detailed else []
        ra, rb, rc = a % m, b % m, c % m
        steps.append(f"{a} mod {m} = {ra}, {b} mod {m} = {rb}, {c} mod {m} = {rc}")
        prod = ra * rb
        steps.append(f"{ra} × {rb} = {prod}, and {prod} mod {m} = {prod % m}")
        ans = (prod % m + rc) % m
        steps.append(f"{prod % m} + {rc} = {prod % m + rc}, and {prod % m + rc} mod {m} = {ans}")
        if detailed:
            steps.append(f"Check directly: {a} × {b} + {c} = {a * b + c} = {m} × {(a * b + c) // m} + {ans}.")
        return phrase.format(a=a, b=b, c=c, m=m), str(ans), steps
    a = rng.randint(2, 20)
    while a % m in (0, 1):  # powers of 0 or 1 teach nothing
        a = rng.randint(2, 20)
    e = rng.randint(5, 10 * difficulty)
    phrase = _pick(
        rng,
        (
            "What is the remainder when {a}^{e} is divided by {m}?",
            "Compute {a}^{e} mod {m}.",
            "Find {a} to the power {e}, modulo {m}.",
        ),
        k,
    )
    steps = [f"Square-and-multiply: write {e} in binary and square repeatedly modulo {m}."] if detailed else []
    bits = bin(e)[2:]
    steps.append(f"{e} in binary is {bits}")
    if a >= m:
        steps.append(f"{a} mod {m} = {a % m}")
    result, sq, power = 1, a % m, 1
    for bit in reversed(bits):
        if bit == "1":
            new = result * sq % m
            steps.append(f"bit for {a}^{power} is 1: {result} × {sq} mod {m} = {new}")
            result = new
        nxt = sq * sq % m
        if power * 2 <= e:
            steps.append(f"{a}^{power * 2} ≡ {sq}^2 = {sq * sq} ≡ {nxt} (mod {m})")
        sq, power = nxt, power * 2
    if detailed:
        steps.append(f"Check: {a}^{e} mod {m} computed directly is {pow(a, e, m)}.")
    return phrase.format(a=a, e=e, m=m), str(result), steps


# --------------------------------------------------------------------------------------------------
# gcd / lcm with Euclid's algorithm


def gen_gcd_lcm(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    g = rng.randint(2, 4 + 4 * difficulty)
    a, b = g * rng.randint(2, 6 * difficulty + 4), g * rng.randint(2, 6 * difficulty + 4)
    while a == b:
        b += g
    want_lcm = difficulty >= 3 and rng.random() < 0.5
    what = "least common multiple" if want_lcm else "greatest common divisor"
    phrase = _pick(
        rng,
        (
            "What is the {w} of {a} and {b}?",
            "Find the {w} of {a} and {b}.",
            "Compute the {w} of the numbers {a} and {b}.",
        ),
        k,
    )
    steps = ["Euclid's algorithm: replace the larger number by its remainder modulo the smaller."] if detailed else []
    x, y = max(a, b), min(a, b)
    while y:
        steps.append(f"{x} = {x // y} × {y} + {x % y}")
        x, y = y, x % y
    steps.append(f"The last nonzero remainder is {x}, so gcd({a}, {b}) = {x}")
    answer = x
    if want_lcm:
        answer = a * b // x
        steps.append(f"lcm = {a} × {b} ÷ {x} = {a * b} ÷ {x} = {answer}")
    if detailed:
        steps.append(f"Check: {answer} divides evenly as expected ({a} ÷ {x} = {a // x}, {b} ÷ {x} = {b // x}).")
    return phrase.format(w=what, a=a, b=b), str(answer), steps


# --------------------------------------------------------------------------------------------------
# number sequences: find the next term


def gen_sequence(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    kind = rng.randint(1, difficulty)
    steps: list[str] = []
    if kind == 1:
        a, d = rng.randint(-20, 50), rng.choice([i for i in range(-9, 13) if i])
        seq = [a + d * i for i in range(6)]
        steps.append(f"Differences between neighbours are all {d}: an arithmetic sequence.")
        nxt = seq[-1] + d
        steps.append(f"{seq[-1]} + {d} = {nxt}" if d > 0 else f"{seq[-1]} - {-d} = {nxt}")
    elif kind == 2:
        a, r = rng.randint(1, 6), rng.randint(2, 4)
        seq = [a * r**i for i in range(5)]
        steps.append(f"Each term is {r} times the one before: a geometric sequence.")
        nxt = seq[-1] * r
        steps.append(f"{seq[-1]} × {r} = {nxt}")
    elif kind == 3:
        a, b, c = rng.randint(1, 3), rng.randint(-5, 5), rng.randint(-10, 10)
        seq = [a * i * i + b * i + c for i in range(1, 7)]
        diffs = [y - x for x, y in zip(seq, seq[1:])]
        steps.append(f"First differences: {', '.join(map(str, diffs))}; they grow by {2 * a} each time.")
        nd = diffs[-1] + 2 * a
        nxt = seq[-1] + nd
        steps.append(f"Next difference {diffs[-1]} + {2 * a} = {nd}, so the next term is {seq[-1]} + {nd} = {nxt}")
    elif kind == 4:
        a, d1, b, d2 = rng.randint(1, 20), rng.randint(2, 9), rng.randint(30, 60), -rng.randint(1, 5)
        seq = [a + d1 * (i // 2) if i % 2 == 0 else b + d2 * (i // 2) for i in range(7)]
        steps.append(
            f"Odd positions go {a}, {a + d1}, ... (step {d1}); even positions go {b}, {b + d2}, ... (step {d2})."
        )
        nxt = b + d2 * 3
        steps.append(f"The next term is at an even position: {seq[-2]} - {-d2} = {nxt}")
    else:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        seq = [a, b]
        for _ in range(5):
            seq.append(seq[-1] + seq[-2])
        steps.append("Each term is the sum of the two before it.")
        nxt = seq[-1] + seq[-2]
        steps.append(f"{seq[-2]} + {seq[-1]} = {nxt}")
    phrase = _pick(
        rng,
        (
            "What is the next number in the sequence {s}, ...?",
            "Find the next term: {s}, ...",
            "Continue the pattern {s}, ... What comes next?",
        ),
        k,
    )
    if detailed:
        steps.insert(0, f"Look at how consecutive terms of {', '.join(map(str, seq))} are related.")
        steps.append(f"The rule gives {nxt} as the next term.")
    return phrase.format(s=", ".join(map(str, seq))), str(nxt), steps
