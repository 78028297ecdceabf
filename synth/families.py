r"""Built-in problem families: seeded generators of problems with exact answers and gold worked solutions.

Each family is a plain function ``gen(rng, difficulty, detailed, k) -> (problem, answer, steps)``:

- ``rng`` is a ``random.Random`` seeded per problem index by the caller, so problem *i* is the same
  whatever other problems are drawn, and work can be sharded by rank;
- ``difficulty`` (1..5) scales sizes and the number of reasoning steps;
- ``detailed`` asks for the long careful trace (restating what is asked, then checking the result);
- ``k`` limits every surface-form pool (phrasings, names, objects, units) to its first ``k`` entries,
  so diversity can be dialled independently of the number of problems.

Invariants: answers are exact (integers, reduced fractions, finite decimals, ordered tuples or sets
of names) and verify with math-verify against themselves inside ``\boxed{}``; ``steps`` is a correct
derivation of the answer; the same ``rng`` state always gives the same output.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import gcd

from frontload.synth.chains import gen_chain_add, gen_chain_mixed, gen_chain_vars

Gen = Callable[[random.Random, int, bool, int], tuple[str, str, list[str]]]

NAMES = (
    "Ana", "Ben", "Carla", "David", "Elif", "Farah", "Gustav", "Hiro", "Ines", "Jomo", "Kwame", "Lucy",
    "Mateo", "Nadia", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Ximena",
    "Yusuf", "Zeynep", "Bilal", "Chloe", "Dmitri", "Emeka",
)  # fmt: skip
ITEMS = (
    ("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("ticket", "tickets"), ("book", "books"),
    ("mug", "mugs"), ("candle", "candles"), ("sandwich", "sandwiches"), ("scarf", "scarves"), ("plant", "plants"),
    ("battery", "batteries"), ("bottle of juice", "bottles of juice"),
)  # fmt: skip
CURRENCIES = ("dollars", "euros", "pounds", "francs", "coins")
OBJECT_SETS = (
    ("apple", "pear", "plum", "cherry", "fig", "lemon"),
    ("cat", "dog", "owl", "fox", "hare", "crow"),
    ("red", "blue", "green", "yellow", "black", "white"),
    ("hammer", "saw", "drill", "wrench", "chisel", "file"),
    ("oak", "pine", "birch", "maple", "elm", "ash"),
)
WORDS = (
    "strawberry", "mississippi", "banana", "committee", "bookkeeper", "parallel", "assessment", "occurrence",
    "possession", "referee", "balloon", "coffee", "letter", "address", "successful", "tomorrow",
)  # fmt: skip
VARIABLES = ("x", "y", "n", "t", "k", "m", "z", "a")


def _pick(rng: random.Random, pool: Sequence, k: int):
    """One entry of ``pool`` among its first ``k`` (the diversity knob)."""
    return pool[rng.randrange(min(k, len(pool)))]


def _sample(rng: random.Random, pool: Sequence, n: int, k: int) -> list:
    """``n`` distinct entries of ``pool`` among its first ``max(k, n)``."""
    return rng.sample(pool[: max(min(k, len(pool)), n)], n)


def fmt_number(x: Fraction | int) -> str:
    """Canonical text of an exact number: ``7``, ``-3/4`` or a finite decimal such as ``6.5``."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # a finite decimal reads better than a fraction for money and measures
        s = f"{float(x):.10f}".rstrip("0")
        return s
    return f"{x.numerator}/{x.denominator}"


def _money(x: Fraction) -> str:
    return f"{float(x):.2f}" if Fraction(x).denominator != 1 else str(Fraction(x).numerator)


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
# unit conversion with exact integer factors

UNITS = {  # (bigger, smaller, factor); each name is (long plural, short)
    "length": [(("kilometers", "km"), ("meters", "m"), 1000), (("meters", "m"), ("centimeters", "cm"), 100), (("centimeters", "cm"), ("millimeters", "mm"), 10), (("yards", "yd"), ("feet", "ft"), 3), (("feet", "ft"), ("inches", "in"), 12)],
    "mass": [(("tonnes", "t"), ("kilograms", "kg"), 1000), (("kilograms", "kg"), ("grams", "g"), 1000), (("pounds", "lb"), ("ounces", "oz"), 16)],
    "time": [(("weeks", "wk"), ("days", "d"), 7), (("days", "d"), ("hours", "h"), 24), (("hours", "h"), ("minutes", "min"), 60), (("minutes", "min"), ("seconds", "s"), 60)],
    "volume": [(("liters", "L"), ("milliliters", "mL"), 1000), (("gallons", "gal"), ("quarts", "qt"), 4)],
}  # fmt: skip
_SINGULAR = {"feet": "foot", "inches": "inch"}


def _one(unit: str) -> str:
    """Singular of a unit name (abbreviations stay as they are)."""
    return _SINGULAR.get(unit) or (unit[:-1] if unit.endswith("s") and len(unit) > 3 else unit)


_CHAINS = [(dim, i) for dim, rows in UNITS.items() for i in range(len(rows) - 1) if rows[i][1] == rows[i + 1][0]]


def gen_unit_conversion(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    short = _pick(rng, (False, True), k)
    u = (lambda name: name[1]) if short else (lambda name: name[0])
    phrase = _pick(
        rng, ("Convert {q} to {u}.", "How many {u} are in {q}?", "Express {q} in {u}.", "{q} is how many {u}?"), k
    )
    steps: list[str] = []
    if difficulty <= 2:
        dim = rng.choice(list(UNITS))
        big, small, f = rng.choice(UNITS[dim])
        if difficulty == 1:
            n = rng.randint(2, 60)
            q, target, ans = f"{n} {u(big)}", u(small), n * f
            steps.append(f"1 {_one(u(big))} = {f} {u(small)}, so {n} × {f} = {ans} {u(small)}")
        else:
            ans = rng.randint(2, 90)
            n = ans * f
            q, target = f"{n} {u(small)}", u(big)
            steps.append(f"{f} {u(small)} make 1 {_one(u(big))}, so {n} ÷ {f} = {ans} {u(big)}")
    elif difficulty in (3, 5):
        dim, i = rng.choice(_CHAINS)
        (big, mid, f1), (_, small, f2) = UNITS[dim][i], UNITS[dim][i + 1]
        n = rng.randint(2, 9 * difficulty)
        ans = n * f1 * f2
        q, target = f"{n} {u(big)}", u(small)
        steps.append(f"{n} {u(big)} = {n} × {f1} = {n * f1} {u(mid)}")
        steps.append(f"{n * f1} {u(mid)} = {n * f1} × {f2} = {ans} {u(small)}")
        if difficulty == 5:
            extra = rng.randint(1, f1 * f2 - 1)
            q = f"{q} and {extra} {u(small)}"
            steps.append(f"Add the remaining {extra} {u(small)}: {ans} + {extra} = {ans + extra}")
            ans += extra
    else:
        dim = rng.choice(list(UNITS))
        big, small, f = rng.choice(UNITS[dim])
        n, extra = rng.randint(1, 30), rng.randint(1, f - 1)
        ans = n * f + extra
        q, target = f"{n} {u(big)} {extra} {u(small)}", u(small)
        steps.append(f"{n} {u(big)} = {n} × {f} = {n * f} {u(small)}")
        steps.append(f"{n * f} + {extra} = {ans} {u(small)}")
    if detailed:
        steps.insert(0, f"We convert {q} into {target}, using exact conversion factors.")
        steps.append(f"So {q} is {ans} {target}.")
    return phrase.format(q=q, u=target), str(ans), steps


# --------------------------------------------------------------------------------------------------
# word problems: rates, work, ages, mixtures, money


def _wp_rate(rng, difficulty, detailed, k):
    name = _pick(rng, NAMES, k)
    vehicle = _pick(rng, ("train", "car", "cyclist", "boat", "bus", "runner"), k)
    segs = [
        (rng.randint(2, 12) * (5 if vehicle != "runner" else 1), rng.randint(1, 4 + difficulty))
        for _ in range(1 + (difficulty + 1) // 2)
    ]
    parts = [f"at {s} km/h for {h} hours" for s, h in segs]
    text = f"{name}'s {vehicle} travels " + ", then ".join(parts) + ". How many kilometers does it travel in total?"
    steps = ["Distance = speed × time for each part, then add the parts."] if detailed else []
    total = 0
    for s, h in segs:
        steps.append(f"{s} km/h × {h} h = {s * h} km")
        total += s * h
    if len(segs) > 1:
        steps.append(" + ".join(str(s * h) for s, h in segs) + f" = {total} km")
    return text, str(total), steps


def _wp_work(rng, difficulty, detailed, k):
    machine = _pick(rng, ("machine", "printer", "baker", "robot", "worker", "pump"), k)
    unit = _pick(
        rng,
        (
            ("bottles", "minute"),
            ("pages", "minute"),
            ("loaves", "hour"),
            ("parts", "hour"),
            ("boxes", "hour"),
            ("liters", "minute"),
        ),
        k,
    )
    per = rng.randint(3, 12 * difficulty)
    count = rng.randint(1, 1 + difficulty)
    time = rng.randint(2, 6 * difficulty)
    total = per * count * time
    text = f"One {machine} produces {per} {unit[0]} per {unit[1]}. How many {unit[1]}s do {count} such {machine}s need to produce {total} {unit[0]}?"
    if count == 1:
        text = f"A {machine} produces {per} {unit[0]} per {unit[1]}. How many {unit[1]}s does it need to produce {total} {unit[0]}?"
    steps = ["Work = rate × time, so time = total ÷ combined rate."] if detailed else []
    if count > 1:
        steps.append(f"Together {count} {machine}s make {count} × {per} = {per * count} {unit[0]} per {unit[1]}")
    steps.append(f"{total} ÷ {per * count} = {time} {unit[1]}s")
    if detailed:
        steps.append(f"Check: {per * count} × {time} = {total}.")
    return text, str(time), steps


def _wp_ages(rng, difficulty, detailed, k):
    a, b = _sample(rng, NAMES, 2, k)
    young = rng.randint(2, 10 + 3 * difficulty)
    mult = rng.randint(2, 2 + difficulty)
    add = rng.randint(0, 5 * difficulty)
    old = mult * young + add
    total = young + old
    rel = f"{mult} times as old as {b}" if add == 0 else f"{add} years older than {mult} times {b}'s age"
    text = f"{a} is {rel}. Together they are {total} years old. How old is {b}?"
    steps = [
        f"Let {b}'s age be y. Then {a}'s age is {mult}y + {add}."
        if add
        else f"Let {b}'s age be y. Then {a}'s age is {mult}y."
    ]
    steps.append(f"y + {mult}y" + (f" + {add}" if add else "") + f" = {total}, so {mult + 1}y = {total - add}")
    steps.append(f"y = {total - add} ÷ {mult + 1} = {young}")
    if detailed:
        steps.insert(0, f"We need {b}'s age; write one equation for the total.")
        steps.append(f"Check: {a} is {old}, and {young} + {old} = {total}.")
    return text, str(young), steps


def _wp_mixture(rng, difficulty, detailed, k):
    name = _pick(rng, NAMES, k)
    thing = _pick(rng, (("acid", "solution"), ("salt", "brine"), ("sugar", "syrup"), ("alcohol", "mixture")), k)
    n = 2 + (difficulty >= 4)
    vols = [10 * rng.randint(1, 3 + difficulty) for _ in range(n)]
    pcts = [10 * rng.randint(1, 9) for _ in range(n)]
    parts = [f"{v} liters of a {p}% {thing[0]} {thing[1]}" for v, p in zip(vols, pcts)]
    text = (
        f"{name} mixes "
        + (", ".join(parts[:-1]) + " and " + parts[-1])
        + f". How many liters of pure {thing[0]} does the mixture contain?"
    )
    steps = [f"Pure {thing[0]} = volume × concentration for each part; the parts add up."] if detailed else []
    total = 0
    for v, p in zip(vols, pcts):
        steps.append(f"{v} × {p}/100 = {v * p // 100} liters")
        total += v * p // 100
    steps.append(" + ".join(str(v * p // 100) for v, p in zip(vols, pcts)) + f" = {total} liters")
    return text, str(total), steps


def _wp_money(rng, difficulty, detailed, k):
    name = _pick(rng, NAMES, k)
    cur = _pick(rng, CURRENCIES, k)
    n_items = 1 + (difficulty + 1) // 2
    items = _sample(rng, ITEMS, n_items, k)
    step_price = Fraction(1) if difficulty <= 2 else Fraction(1, 4)
    buys = [
        (rng.randint(1, 2 + difficulty), step_price * rng.randint(2, 12 if difficulty <= 2 else 40)) for _ in items
    ]
    cost = sum(q * p for q, p in buys)
    paid = (int(cost) // 10 + 1 + rng.randint(0, 2)) * 10
    parts = [f"{q} {it[1] if q > 1 else it[0]} at {_money(p)} {cur} each" for (q, p), it in zip(buys, items)]
    text = (
        f"{name} buys "
        + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])
        + f", and pays with {paid} {cur}. How much change does {name} get, in {cur}?"
    )
    steps = ["Add up the cost of each item, then subtract it from the amount paid."] if detailed else []
    for (q, p), it in zip(buys, items):
        steps.append(f"{q} × {_money(p)} = {_money(q * p)} {cur} for the {it[1]}")
    if len(buys) > 1:
        steps.append("Total: " + " + ".join(_money(q * p) for q, p in buys) + f" = {_money(cost)} {cur}")
    change = paid - cost
    steps.append(f"Change: {paid} - {_money(cost)} = {_money(change)} {cur}")
    return text, fmt_number(change), steps


_WORD_KINDS = (_wp_money, _wp_rate, _wp_ages, _wp_work, _wp_mixture)


def gen_word_problem(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    kind = _WORD_KINDS[rng.randrange(len(_WORD_KINDS))]
    text, answer, steps = kind(rng, difficulty, detailed, k)
    if detailed:
        steps.append(f"The answer is {answer}.")
    return text, answer, steps


# --------------------------------------------------------------------------------------------------
# counting objects or letters


def _running_count(items: Sequence, target, label: str, every: bool, steps: list[str]) -> int:
    """Count ``target`` in ``items``, one step per hit (per item when ``every``)."""
    count = 0
    for i, item in enumerate(items, 1):
        if item == target:
            count += 1
            steps.append(f"{label} {i} is {item}: count {count}")
        elif every:
            steps.append(f"{label} {i} is {item}: not counted")
    return count


def gen_counting(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    if rng.random() < 0.3:
        word = _pick(rng, WORDS, k)
        letter = rng.choice(sorted(set(word)))
        phrase = _pick(
            rng,
            (
                'How many times does the letter "{l}" appear in the word "{w}"?',
                'Count the letter "{l}" in "{w}".',
                'In the word "{w}", how many "{l}"s are there?',
            ),
            k,
        )
        steps = [f'Spell "{word}" letter by letter and keep a running count of "{letter}".'] if detailed else []
        count = _running_count(word, letter, "letter", False, steps)
        steps.append(f'"{letter}" appears {count} times.')
        return phrase.format(l=letter, w=word), str(count), steps
    objs = _pick(rng, OBJECT_SETS, k)
    kinds = objs[: 2 + min(difficulty, 4)]
    n = 4 + 4 * difficulty
    seq = [rng.choice(kinds) for _ in range(n)]
    target = rng.choice(seq)
    phrase = _pick(
        rng,
        (
            "Here is a list: {s}. How many times does {t} appear?",
            "Count how many entries equal {t} in this list: {s}.",
            "In the sequence {s}, how many are {t}?",
        ),
        k,
    )
    steps = [f"Go through the {n} entries and count each {target}."] if detailed else []
    count = _running_count(seq, target, "entry", detailed, steps)
    steps.append(f"{target} appears {count} times.")
    return phrase.format(s=", ".join(seq), t=target), str(count), steps


# --------------------------------------------------------------------------------------------------
# sorting (the answer is an ordered tuple, so order is checked)


def gen_sorting(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    n = 3 + 2 * difficulty
    lo = -20 * difficulty if difficulty >= 3 else 0
    nums = [rng.randint(lo, 20 * difficulty * difficulty) for _ in range(n)]
    desc = rng.random() < 0.5
    order = "descending" if desc else "ascending"
    phrase = _pick(
        rng,
        (
            "Sort these numbers in {o} order: {l}. Give the result as a tuple in parentheses.",
            "Arrange {l} in {o} order, written as a tuple (a, b, ...).",
            "Put the numbers {l} in {o} order and write them in parentheses, separated by commas.",
        ),
        k,
    )
    steps = (
        [f"Selection sort: repeatedly take the {'largest' if desc else 'smallest'} remaining number."]
        if detailed
        else []
    )
    rest, out = list(nums), []
    while rest:
        pick = max(rest) if desc else min(rest)
        rest.remove(pick)
        out.append(pick)
        steps.append(
            f"{'largest' if desc else 'smallest'} of the remaining is {pick}"
            + (f"; left: {', '.join(map(str, rest))}" if detailed and rest else "")
        )
    answer = "(" + ", ".join(map(str, out)) + ")"
    if detailed:
        steps.append(f"All {n} numbers are placed: {answer}.")
    return phrase.format(o=order, l=", ".join(map(str, nums))), answer, steps


# --------------------------------------------------------------------------------------------------
# logic: knights (always tell the truth) and knaves (always lie)


_CASES = {n: [tuple(bool(c >> (n - 1 - b) & 1) for b in range(n)) for c in range(2**n - 1, -1, -1)] for n in (2, 3, 4)}
# Truth tables as bitmasks over the cases (bit c = case c): person p is a knight in the cases of _ROLE[n][p].
_FULL = {n: (1 << 2**n) - 1 for n in _CASES}
_ROLE = {n: [sum(1 << c for c, case in enumerate(cases) if case[p]) for p in range(n)] for n, cases in _CASES.items()}


def _statement(rng: random.Random, people: Sequence[str], speaker: int) -> tuple[str, int]:
    """A statement ``speaker`` could make, and the cases in which it is true."""
    n = len(people)
    role, full = _ROLE[n], _FULL[n]
    # rng.random() is a C call; randrange is Python-level and was most of this generator's time.
    rand = rng.random
    i = int(rand() * (n - 1))
    i += i >= speaker  # the first person named is never the speaker (self-praise says nothing)
    j = int(rand() * (n - 1))
    j += j >= i
    a, b = role[i], role[j]
    kind = int(rand() * 5)
    if kind == 0:
        return f"{people[i]} is a knight", a
    if kind == 1:
        return f"{people[i]} is a knave", full & ~a
    if kind == 2:
        return f"{people[i]} and {people[j]} are both knights", a & b
    if kind == 3:
        return f"{people[i]} and {people[j]} are of the same kind", full & ~(a ^ b)
    return f"at least one of {people[i]} and {people[j]} is a knave", full & ~(a & b)


def gen_logic(rng: random.Random, difficulty: int, detailed: bool, k: int) -> tuple[str, str, list[str]]:
    n = (2, 3, 3, 4, 4)[difficulty - 1]
    people = _sample(rng, NAMES, n, k)
    cases, role, full = _CASES[n], _ROLE[n], _FULL[n]
    while True:
        # Fix the answer first and let each speaker say something that fits their role, then keep the
        # puzzle only if no other assignment fits too; far fewer rejected drafts than random statements.
        sol = rng.randrange(len(cases) - 1)  # the last case is all knaves, excluded
        says = []
        fits = full  # cases in which every statement so far fits its speaker
        for p in range(n):
            st = _statement(rng, people, p)
            while (st[1] >> sol & 1) != (role[p] >> sol & 1):
                st = _statement(rng, people, p)
            says.append(st)
            fits &= full & ~(st[1] ^ role[p])
        if fits == 1 << sol:
            break
    setting = _pick(
        rng,
        (
            "On an island, knights always tell the truth and knaves always lie.",
            "Every inhabitant of this village is either a knight, who always tells the truth, or a knave, who always lies.",
        ),
        k,
    )
    lines = " ".join(f'{people[p]} says: "{says[p][0]}."' for p in range(n))
    text = f"{setting} {lines} Which of them are knights? List the names separated by commas."
    steps = [f"Try all {2**n} assignments; a knight's statement must be true and a knave's false."] if detailed else []
    words = [(f"{name} knave", f"{name} knight") for name in people]
    for ci, c in enumerate(cases):
        label = ", ".join([words[p][c[p]] for p in range(n)])
        bad = next((p for p in range(n) if (says[p][1] >> ci & 1) != c[p]), None)
        if bad is None:
            steps.append(f"{label}: every statement fits. This is the solution.")
        else:
            truth = "true" if says[bad][1] >> ci & 1 else "false"
            steps.append(
                f"{label}: {people[bad]}'s statement would be {truth}, which a {'knight' if c[bad] else 'knave'} cannot say."
            )
    knights = [people[p] for p in range(n) if cases[sol][p]]
    if detailed:
        steps.append(f"Only one assignment works, so the knights are {', '.join(knights)}.")
    return text, ", ".join(knights), steps


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


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One built-in generator: its name, a one-line description and the function."""

    name: str
    description: str
    gen: Gen


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("arithmetic", "multi-step integer expressions with +, -, × and parentheses", gen_arithmetic),
        Family("multiplication", "multi-digit long multiplication and exact long division", gen_multiplication),
        Family("linear_equation", "one-unknown linear equations with an integer solution", gen_linear_equation),
        Family("fractions", "sums, differences, products and quotients of fractions in lowest terms", gen_fractions),
        Family("modular", "remainders of products and of powers (square-and-multiply)", gen_modular),
        Family("unit_conversion", "length, mass, time and volume conversions with exact factors", gen_unit_conversion),
        Family("word_problem", "word problems about money, rates, ages, work and mixtures", gen_word_problem),
        Family("counting", "counting objects in a list or letters in a word", gen_counting),
        Family("sorting", "sorting a list of integers ascending or descending (ordered tuple answer)", gen_sorting),
        Family("logic", "knights-and-knaves puzzles with a unique solution (set of names answer)", gen_logic),
        Family("gcd_lcm", "greatest common divisor and least common multiple via Euclid's algorithm", gen_gcd_lcm),
        Family(
            "sequence",
            "next term of arithmetic, geometric, quadratic, interleaved or Fibonacci-like sequences",
            gen_sequence,
        ),
        Family(
            "chain_add", "chains of single-digit additions and subtractions mod 10, one line per step", gen_chain_add
        ),
        Family("chain_mixed", "chains of single-digit +, - and × mod 10, one line per step", gen_chain_mixed),
        Family(
            "chain_vars", "variables each defined from an earlier one by a single-digit step mod 10", gen_chain_vars
        ),
    )
}
