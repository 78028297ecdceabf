"""Per-step arithmetic check of a reasoning trace: ``steps_v1``, a score (never a drop).

A final-answer check (``verify_v1``) cannot tell a right derivation from a lucky one: when answers
are single digits a tiny teacher reaches the right digit through wrong steps about one time in ten.
This scorer recomputes every single arithmetic step the trace writes out, line by line:

- a step is ``a op b = c`` with integers (``(-18)`` allowed), ``op`` one of ``+ - × * x ÷ /``,
  ``\\times``, ``\\cdot``, ``\\div``, ``mod`` or ``^`` (exponents up to 64); an assignment prefix (``b = 5 + 3 = 8``,
  ``b = a + 3 = 5 + 3 = 8``) is allowed, several steps on one line are each checked;
- a step inside a longer expression (``2 + 3 × 4 = 14``, ``(3 + 4) × 2 = 14``), on decimals or
  fractions (``1.5 + 2 = 3.5``, ``1/2 + 1/3``) or with units between the numbers is not a step and
  is ignored, never counted wrong;
- a line that says ``mod N`` (``(mod 10)``, ``modulo 10``) is checked modulo ``N``; other lines are
  checked modulo ``N`` when the problem says ``mod N`` (``Compute (3 × 4 + 5) mod 10.``), otherwise
  exactly. ``a mod N = c`` itself must give the least residue; division ``a ÷ b = c`` must be exact
  unless a remainder follows (``64 ÷ 18 = 3, remainder 10``: long division).

``metadata["steps_v1"]`` is ``{"checked", "correct", "fraction", "first_wrong", "links", "breaks"}``;
``fraction`` is ``None`` when no line holds a checkable step, so a rule keeps or drops such traces
explicitly (``steps_v1.checked == 0 or steps_v1.fraction == 1``); ``None`` fails every comparison
with a number. ``links``/``breaks`` count chain consistency: a step without an assignment prefix
is linked to the step before it (its left operand must equal that step's result), and a step that
substitutes a variable (``b = a + 3 = 5 + 3``) is linked to the value the trace (or the problem)
gave that variable. Only step-by-step chains (the ``chain_*`` families) start every step from the
last result; long multiplication or side computations break the chain in a correct trace, so
threshold ``breaks`` per family.
"""

from __future__ import annotations

from typing import Any

import regex
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from frontload.core.chat import parse_response
from frontload.filters.scores import completion_of

MAX_EXPONENT = 64  # 9^64 has 62 digits: powers above this are left unchecked rather than computed
_INT = r"-?\d{1,40}"
_NUM = rf"(?:\(\s*{_INT}\s*\)|{_INT})"
# "x" is multiplication only between numbers, spaced on both sides or on neither ("3 x 4", "3x4").
_OP = r"(?:\\times|\\cdot|\\div|mod(?:ulo)?\b|\*\*|[-+*×÷/^]|(?<=\s)x(?=\s)|(?<=\d)x(?=\d))"
_STEP = regex.compile(
    rf"(?P<a>{_NUM})\s*(?P<op>{_OP})\s*(?P<b>{_NUM})(?P<mod>\s*\(?\s*mod(?:ulo)?\s*\d{{1,18}}\s*\)?)?\s*[=≡]\s*(?P<c>{_NUM})"
)
_REMAINDER = regex.compile(r",?\s*(?:with\s+)?(?:a\s+)?(?:remainder|rem\.?|R|r)\s*(\d{1,40})\b")
_MODULUS = regex.compile(r"\bmod(?:ulo)?\s*\(?\s*(\d{1,18})\b")
# What may sit right before a step: the value it substitutes ("b = a + 3 = ") or the name it sets ("b = ").
_PREFIX = regex.compile(
    rf"(?P<name>[A-Za-z]\w*)\s*=\s*(?:(?P<var>[A-Za-z]\w*)\s*(?P<op>{_OP})\s*(?P<b>{_NUM})\s*=\s*)?$"
)
_ASSIGN = regex.compile(rf"(?<![\w.])(?P<name>[A-Za-z]\w*)\s*=\s*(?P<value>{_INT})(?![\d^%]|[.,/]\d|\s*(?:{_OP}))")
_BEFORE_TOUCHING = set(".,/^)%_") | {"\\"}  # right before an operand without a space: part of a number or word
_BEFORE_OPERATOR = set("+-*×÷/^%)")  # the operand continues a longer expression
# The result continues: a decimal, a fraction, a word, or an expression ("= 5 + 1"); "= 2 mod 10" is a note.
_AFTER = regex.compile(r"(?:[.,/]\d|[\w%^]|\s*(?:\\times|\\cdot|\\div|[-+*×÷/^]|x\s))")


def _int(text: str) -> int:
    return int(text.strip("() \t"))


def _op(op: str) -> str:
    if op in ("+", "-"):
        return op
    if op.startswith("mod"):
        return "mod"
    if op in ("^", "**"):
        return "^"
    return "/" if op in ("÷", "/", "\\div") else "*"


def _modulus(text: str) -> int | None:
    m = _MODULUS.search(text)
    return int(m.group(1)) if m and int(m.group(1)) >= 2 else None


def _is_step(line: str, start: int, end: int) -> bool:
    """A whole step, not a piece of a longer expression, a decimal, a fraction or a word."""
    before = line[:start]
    if before and (before[-1] in _BEFORE_TOUCHING or before[-1].isalnum()):
        return False
    stripped = before.rstrip()
    if stripped and (stripped[-1] in _BEFORE_OPERATOR or stripped.endswith((" x", "mod", "modulo"))):
        return False
    return not _AFTER.match(line, end)


def step_correct(a: int, op: str, b: int, c: int, modulus: int | None = None, remainder: int | None = None) -> bool:
    """Whether ``a op b = c`` holds (modulo ``modulus`` when given; ``mod`` and division exactly as written).

    A division with a ``remainder`` (``64 ÷ 18 = 3, remainder 10``) is long division: ``a = b·c + r``, ``0 <= r < |b|``.
    """
    if op == "mod":
        return b > 0 and a % b == c
    if op == "/":
        if b == 0:
            return False
        if remainder is not None:
            return a == b * c + remainder and 0 <= remainder < abs(b)
        return (b * c - a) % modulus == 0 if modulus else b * c == a
    value = a**b if op == "^" else a + b if op == "+" else a - b if op == "-" else a * b
    return (value - c) % modulus == 0 if modulus else value == c


def _same(x: int, y: int, modulus: int | None) -> bool:
    return (x - y) % modulus == 0 if modulus else x == y


def check_steps(trace: str, problem: str = "") -> dict[str, Any]:
    """The ``steps_v1`` score of ``trace``; ``problem`` supplies a ``mod N`` and variable values (``a = 5``)."""
    default_mod = _modulus(problem)
    env = {m["name"]: _int(m["value"]) for m in _ASSIGN.finditer(problem)}
    checked = correct = links = breaks = 0
    first_wrong: str | None = None
    previous: int | None = None  # the result of the last step, which the next unprefixed step starts from
    for raw_line in trace.splitlines():
        line = raw_line.replace("−", "-")  # Unicode minus
        modulus = _modulus(line) or default_mod
        for m in _ASSIGN.finditer(line):  # plain values ("We know a = 5") that later steps may look up
            env[m["name"]] = _int(m["value"])
        for m in _STEP.finditer(line, overlapped=True):
            if not _is_step(line, m.start(), m.end()):
                continue
            op = _op(m["op"])
            a, b, c = _int(m["a"]), _int(m["b"]), _int(m["c"])
            if op == "^" and not 0 <= b <= MAX_EXPONENT:
                continue  # a power too large to recompute cheaply is not checked
            rem = _REMAINDER.match(line, m.end()) if op == "/" else None
            note = _modulus(m["mod"]) if m["mod"] else None  # "15 × 9 mod 27 = 0": the step's own modulus
            ok = step_correct(a, op, b, c, note or modulus, int(rem.group(1)) if rem else None)
            checked += 1
            correct += ok
            if not ok and first_wrong is None:
                first_wrong = m.group().strip()
            prefix = _PREFIX.search(line[: m.start()])
            if prefix is None:
                if previous is not None:
                    links += 1
                    breaks += not _same(a, previous, modulus)
            elif prefix["var"] is not None and prefix["var"] in env:
                links += 1
                breaks += not (_same(env[prefix["var"]], a, modulus) and _int(prefix["b"]) == b)
            if prefix is not None:
                env[prefix["name"]] = c
            previous = c
    return {
        "checked": checked,
        "correct": correct,
        "fraction": round(correct / checked, 6) if checked else None,
        "first_wrong": first_wrong,
        "links": links,
        "breaks": breaks,
    }


class StepScorer(PipelineStep):
    """Writes ``steps_v1``: how many single arithmetic steps of the trace were checked, and how many are right."""

    name = "🔢 check arithmetic steps"
    type = "📊 - SCORER"

    def __init__(self, version: str = "v1") -> None:
        super().__init__()
        self.key = f"steps_{version}"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            meta = doc.metadata
            trace = meta.get("trace")
            if trace is None:
                trace = parse_response(completion_of(doc)).think or ""
            with self.track_time():
                score = check_steps(str(trace), str(meta.get("problem") or ""))
            meta[self.key] = score
            self.stat_update(
                "total",
                "no_steps"
                if not score["checked"]
                else "all_right"
                if score["correct"] == score["checked"]
                else "some_wrong",
            )
            yield doc
