"""Decontamination: drop records that share an n-gram with an evaluation set's questions (offline).

An index is built from eval files (JSONL or Parquet, a question field and optionally an answer
field) with no lighteval and nothing downloaded. Text on both sides is normalized with datatrove's
``simplify_text`` (lower case, punctuation removed, whitespace and diacritics normalized) but with
number normalization **off**: in arithmetic every problem differs only in its numbers, so folding
digits would flag the whole corpus. Tokens are the words of the normalized text.

Invariants:

- A question of at least ``n`` tokens is indexed by all its ``n``-grams; a record whose problem or
  response contains any of them is contaminated.
- A question shorter than ``n`` tokens has no ``n``-gram; it is indexed whole, and a record whose
  normalized problem *equals* it is contaminated (a whole-question match; a substring match of a
  3-word question would flag unrelated records).
- A contaminated record is dropped with reason ``decontaminate:<eval set name>`` (the file's stem
  unless named), the first set that matched in config order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.text import TextNormConfig, simplify_text

from frontload.core.errors import FrontloadError

# Numbers are kept: folding digits would make every arithmetic problem a leak of every other.
DECONT_NORM = TextNormConfig(norm_numbers=False)


def normalize_tokens(text: str) -> list[str]:
    """Words of ``text`` after datatrove's normalization (numbers kept)."""
    return simplify_text(text, DECONT_NORM).split()


def ngrams_of(tokens: list[str], n: int) -> set[str]:
    """All ``n``-grams of a token list, each joined by single spaces."""
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def read_eval_questions(path: str | os.PathLike, question_field: str = "question") -> list[str]:
    """The questions of one eval file (``.jsonl``/``.json`` lines or ``.parquet``); errors name file and line."""
    path = Path(path)
    if not path.exists():
        raise FrontloadError(f"{path}: eval set file not found")
    questions: list[str] = []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if question_field not in table.column_names:
            raise FrontloadError(f"{path}: no column {question_field!r} (columns: {', '.join(table.column_names)})")
        return [str(q) for q in table.column(question_field).to_pylist() if q]
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FrontloadError(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict) or question_field not in row:
                raise FrontloadError(f"{path}:{lineno}: no field {question_field!r}")
            questions.append(str(row[question_field]))
    return questions


@dataclass
class EvalIndex:
    """n-grams and whole short questions of one eval set."""

    name: str
    n: int
    ngrams: set[str] = field(default_factory=set)
    short: set[str] = field(default_factory=set)
    questions: int = 0

    @classmethod
    def build(cls, name: str, questions: list[str], n: int) -> EvalIndex:
        index = cls(name=name, n=n, questions=len(questions))
        for q in questions:
            tokens = normalize_tokens(q)
            if not tokens:
                continue
            if len(tokens) < n:
                index.short.add(" ".join(tokens))
            else:
                index.ngrams |= ngrams_of(tokens, n)
        return index

    def matches(self, problem_tokens: list[str], other_tokens: list[str]) -> bool:
        """True if the record's problem or response overlaps this eval set."""
        if self.short and " ".join(problem_tokens) in self.short:
            return True
        if not self.ngrams:
            return False
        n = self.n
        for tokens in (problem_tokens, other_tokens):
            for i in range(len(tokens) - n + 1):
                if " ".join(tokens[i : i + n]) in self.ngrams:
                    return True
        return False


def eval_set_name(spec: str) -> tuple[str, Path]:
    """``name=path`` or a bare path (named by its file stem)."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        return name.strip(), Path(path.strip())
    path = Path(spec)
    stem = path.name.split(".")[0]
    return stem, path


def build_eval_indexes(specs: list[str], n: int, question_field: str = "question") -> list[EvalIndex]:
    """One :class:`EvalIndex` per eval file spec (``name=path`` or a path)."""
    return [
        EvalIndex.build(name, read_eval_questions(path, question_field), n) for name, path in map(eval_set_name, specs)
    ]


class DecontaminationFilter(BaseFilter):
    """Drops records overlapping an eval set, with reason ``decontaminate:<set>``."""

    name = "🧼 decontaminate"

    def __init__(
        self, indexes: list[EvalIndex], fields: tuple[str, ...] = ("response",), exclusion_writer: DiskWriter = None
    ) -> None:
        super().__init__(exclusion_writer)
        self.indexes = indexes
        self.fields = fields

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        meta: dict[str, Any] = doc.metadata
        problem = normalize_tokens(str(meta.get("problem") or doc.text))
        other = normalize_tokens(" ".join(str(meta.get(f) or "") for f in self.fields))
        for index in self.indexes:
            if index.matches(problem, other):
                return False, f"decontaminate:{index.name}"
        return True
