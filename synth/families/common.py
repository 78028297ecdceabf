"""What the problem families share: the surface-form pools (names, items, objects, words) and exact number text."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from fractions import Fraction

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
