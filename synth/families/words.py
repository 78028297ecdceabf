"""Families told in words: unit conversion, word problems, counting, sorting and knights-and-knaves logic."""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction

from frontload.synth.families.common import (
    CURRENCIES,
    ITEMS,
    NAMES,
    OBJECT_SETS,
    WORDS,
    _money,
    _pick,
    _sample,
    fmt_number,
)

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
