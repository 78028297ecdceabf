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

A new family is a ``gen_*`` function in :mod:`.numbers` or :mod:`.words` (shared pools and number
text in :mod:`.common`) and one :class:`Family` row in :data:`FAMILIES` below. A change to what an
existing family writes (its problems, answers or traces) bumps :data:`VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass

from frontload.synth.chains import gen_chain_add, gen_chain_mixed, gen_chain_vars
from frontload.synth.families.common import NAMES, Gen, fmt_number
from frontload.synth.families.numbers import (
    gen_arithmetic,
    gen_fractions,
    gen_gcd_lcm,
    gen_linear_equation,
    gen_modular,
    gen_multiplication,
    gen_sequence,
)
from frontload.synth.families.words import gen_counting, gen_logic, gen_sorting, gen_unit_conversion, gen_word_problem

# Part of the fingerprint of every generated corpus and evaluation task: a workspace built with older
# generators is not reused after their output changed. The next bump is to 3: 2 was briefly used for
# traces that carried the steps still to do (docs/study.md c9), and a workspace may hold those.
VERSION = 1

__all__ = ["FAMILIES", "NAMES", "Family", "fmt_number"]


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
            "chain_add",
            "chains of single-digit additions and subtractions within 0..9, one line per step",
            gen_chain_add,
        ),
        Family("chain_mixed", "chains of single-digit +, - and × mod 10, one line per step", gen_chain_mixed),
        Family("chain_vars", "variables each defined from an earlier one by a single-digit step", gen_chain_vars),
    )
}
