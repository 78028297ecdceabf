r"""Answer verification: is a model's extracted answer the gold answer? (contract 7)

:func:`verify_answer` returns ``"correct"``, ``"wrong"`` or ``"unparseable"`` and never raises: a
crash inside math-verify or sympy becomes ``"unparseable"`` (callers count those). It is used by the
filters, evaluation and RL rewards, so it must be safe in threads: math-verify's own timeouts rely on
``signal.alarm`` (main thread only), so they are switched off (``parsing_timeout=None,
timeout_seconds=None``) and replaced by a static guard that refuses expressions whose evaluation
could run away (``9^{9^{9^9}}``, ``99999999!``). On the main thread a signal timeout is added too.

Modes:

- ``"math"`` (default): math-verify ``parse`` + ``verify`` (fractions, decimals, percentages,
  ``x=3`` vs ``3``, LaTeX, sets). Plain-number lists (``1, 3, 7``) compare element by element in
  order. Textual gold answers (names, yes/no, knight/knave) and uppercase single letters (multiple
  choice) compare as normalized strings instead: letters parsed as sympy symbols would make
  ``dog`` equal ``god``.
- ``"exact"``: normalized string equality (whitespace, ``$``, ``\boxed{}``, trailing period).
- ``"numeric"``: both sides as numbers, equal within ``rel_tol``/``abs_tol``.
- ``"choice"``: multiple choice; the first option letter of the prediction against the gold letter.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from functools import lru_cache
from typing import Literal

Verdict = Literal["correct", "wrong", "unparseable"]
Mode = Literal["math", "exact", "numeric", "choice"]
MODES: tuple[str, ...] = ("math", "exact", "numeric", "choice")
VERDICTS: tuple[str, ...] = ("correct", "wrong", "unparseable")

# A prediction longer than this is not an answer but a runaway completion; parsing it costs seconds.
MAX_ANSWER_CHARS = 1000
_MAX_INT_EXPONENT = 10_000
_MAX_FACTORIAL = 1_000

log = logging.getLogger(__name__)


class _NoTimeoutWarning(logging.Filter):
    """math-verify warns once that timeouts are off; here that is deliberate (the guard replaces them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())

_BOXED = re.compile(r"^\\(?:boxed|fbox)\{(.*)\}$", re.DOTALL)
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_MATH_WORDS = {"sqrt", "frac", "dfrac", "tfrac", "pi", "infty", "inf", "cdot", "times", "left", "right", "le", "ge"}
_NUMBER_LIST = re.compile(r"^\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)+\s*$")
_THOUSANDS = re.compile(r"^\s*-?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*$")
_CHOICE = re.compile(r"^\(?([A-Ja-j])\)?(?:[.):\s]|$)")
_CHOICE_ANYWHERE = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\)?\b", re.IGNORECASE)


def _strip_wrappers(text: str) -> str:
    r"""Remove what surrounds an answer but is not part of it: ``$``, ``\boxed{}``, a final period."""
    s = text.strip()
    for _ in range(3):
        before = s
        s = s.strip().strip("$").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2].strip()
        m = _BOXED.match(s)
        if m:
            s = m.group(1).strip()
        s = s.rstrip(".").strip()
        if s == before:
            break
    return s


def normalize_text(text: str) -> str:
    """Lower-case words without LaTeX text wrappers, punctuation runs or extra spaces (names, yes/no)."""
    s = _TEXT.sub(r"\1", _strip_wrappers(text)).lower()
    s = re.sub(r"\s*,\s*", ", ", s)
    s = re.sub(r"[^\w,\s/.\-]", " ", s)
    s = re.sub(r"\b(?:a|an|the)\b", " ", s)
    return " ".join(s.split()).strip(" .")


def is_textual(answer: str) -> bool:
    """True for answers made of words (names, yes/no, knight/knave) rather than mathematics."""
    s = _TEXT.sub(r"\1", _strip_wrappers(answer))
    if re.search(r"\d", s):
        return False
    words = [w.lower() for w in _WORD.findall(_LATEX_CMD.sub(" ", s))]
    return any(w not in _MATH_WORDS for w in words)


def _choice_letter(text: str) -> str | None:
    s = _TEXT.sub(r"\1", _strip_wrappers(text)).strip()
    m = _CHOICE.match(s)
    if m:
        return m.group(1).upper()
    m = _CHOICE_ANYWHERE.search(s)
    return m.group(1).upper() if m else None


def _is_choice_gold(gold: str) -> bool:
    return re.fullmatch(r"\(?[A-J]\)?", _strip_wrappers(gold)) is not None


def _math_input(text: str) -> str:
    # math-verify's default extraction finds far more in a `$...$` span than in bare text (`\dfrac`, `50\%`).
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _runaway(parsed: list) -> bool:
    """True if evaluating a parsed answer could hang: huge integer powers, towers, big factorials."""
    import sympy

    for item in parsed:
        if not isinstance(item, sympy.Basic):
            continue
        for p in item.atoms(sympy.Pow):
            exp = p.exp
            if exp.is_Integer and abs(int(exp)) > _MAX_INT_EXPONENT:
                return True
            if isinstance(exp, sympy.Pow) and exp.base.is_number and exp.exp.is_number:
                return True
        for f in item.atoms(sympy.factorial):
            if f.args[0].is_Integer and int(f.args[0]) > _MAX_FACTORIAL:
                return True
    return False


def _timeout() -> int | None:
    # signal.alarm works only on the main thread; elsewhere the static guard alone protects us.
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse(text: str) -> list:
    from math_verify import parse

    return parse(_math_input(text), parsing_timeout=_timeout())


def _math_equal(gold: str, prediction: str) -> Verdict:
    from math_verify import verify

    g, p = _parse(gold), _parse(prediction)
    if not g:
        # Gold that math-verify cannot read (free text) is compared as text.
        return "correct" if normalize_text(gold) == normalize_text(prediction) else "wrong"
    if not p:
        return "correct" if normalize_text(gold) == normalize_text(prediction) else "unparseable"
    if _runaway(g) or _runaway(p):
        return "unparseable"
    return "correct" if verify(g, p, timeout_seconds=_timeout()) else "wrong"


def _split_list(text: str) -> list[str] | None:
    s = _strip_wrappers(text)
    if _THOUSANDS.match(s) or not _NUMBER_LIST.match(s):
        return None
    return [x.strip() for x in s.split(",")]


def _to_number(text: str) -> float | None:
    s = _TEXT.sub(r"\1", _strip_wrappers(text)).replace("\\%", "%").replace(" ", "")
    scale = 1.0
    if s.endswith("%"):
        s, scale = s[:-1], 0.01
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        return float(s) * scale
    except ValueError:
        pass
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", s)
    if m and float(m.group(2)) != 0:
        return float(m.group(1)) / float(m.group(2)) * scale
    parsed = _parse(text)
    if not parsed or _runaway(parsed):
        return None
    try:
        value = complex(parsed[0].evalf())
    except (TypeError, ValueError, AttributeError):
        return None
    return value.real if value.imag == 0 and math.isfinite(value.real) else None


_INTEGER = re.compile(r"^-?\d+$")


@lru_cache(maxsize=1 << 16)
def _verify(gold: str, prediction: str, mode: str, rel_tol: float, abs_tol: float) -> Verdict:
    # Rollouts repeat (gold, prediction) pairs a lot; the cache makes a repeat free.
    if mode == "exact":
        norm = lambda s: " ".join(_strip_wrappers(s).split())  # noqa: E731
        return "correct" if norm(gold) == norm(prediction) else "wrong"
    if mode == "choice" or (mode == "math" and _is_choice_gold(gold)):
        letter = _choice_letter(prediction)
        if letter is None:
            return "unparseable"
        return "correct" if letter == _strip_wrappers(gold).strip("()").upper() else "wrong"
    if mode == "numeric":
        g, p = _to_number(gold), _to_number(prediction)
        if g is None:
            raise ValueError(f"gold answer {gold!r} is not a number")
        if p is None:
            return "unparseable"
        return "correct" if math.isclose(g, p, rel_tol=rel_tol, abs_tol=abs_tol) else "wrong"
    if is_textual(gold):
        return "correct" if normalize_text(gold) == normalize_text(prediction) else "wrong"
    g, p = _strip_wrappers(gold), _strip_wrappers(prediction)
    # Fast paths with math-verify's own answers: identical text, or two plain integers (most arithmetic).
    if g == p:
        return "correct"
    if _INTEGER.match(g) and _INTEGER.match(p):
        return "correct" if int(g) == int(p) else "wrong"
    gold_items = _split_list(gold)
    if gold_items is not None:
        pred_items = _split_list(prediction)
        if pred_items is None:
            return _math_equal(gold, prediction)
        if len(pred_items) != len(gold_items):
            return "wrong"
        verdicts = [_math_equal(g, p) for g, p in zip(gold_items, pred_items)]
        return "correct" if all(v == "correct" for v in verdicts) else "wrong"
    return _math_equal(gold, prediction)


def verify_answer(
    gold: str, prediction: str | None, mode: str = "math", *, rel_tol: float = 1e-6, abs_tol: float = 1e-9
) -> Verdict:
    """``"correct"``, ``"wrong"`` or ``"unparseable"`` for one predicted answer; safe in threads.

    Never raises for any gold or prediction (a verifier crash is ``"unparseable"``); only an unknown
    ``mode`` (a programming error) raises ``ValueError``.
    """
    if mode not in MODES:
        raise ValueError(f"verify mode must be one of {list(MODES)}, got {mode!r}")
    if prediction is None or not str(prediction).strip() or len(str(prediction)) > MAX_ANSWER_CHARS:
        return "unparseable"
    try:
        return _verify(str(gold), str(prediction), mode, rel_tol, abs_tol)
    except Exception as e:  # noqa: BLE001 - a verifier crash must cost one verdict, not a run
        log.debug("verifier error on gold=%r prediction=%r: %s", gold, prediction, e)
        return "unparseable"
