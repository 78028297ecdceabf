"""Scorers: datatrove steps that write versioned scores into ``doc.metadata`` and never drop a record.

Score first, threshold later (:mod:`frontload.filters.threshold` decides), so an ablation over
thresholds needs no rescoring. Scores written here:

- ``verify_v1``: ``"correct"``/``"wrong"``/``"unparseable"`` (:func:`~frontload.filters.verify.verify_answer`
  on ``answer`` and ``prediction``; a missing prediction is re-extracted from the completion).
- ``format_v1``: ``"ok"``, ``"no_think"``, ``"unclosed_think"`` or ``"no_answer"``.
- ``length_v1``: trace length in tokens (a frontload tokenizer when given, else whitespace words).
- ``repetition_v1``: datatrove's Gopher repetition measures of the trace (fractions in [0, 1]).
- ``truncated_v1``: the generation stopped at its token limit (``finish_reason == "length"``).
- ``nonprintable_v1``: count of non-printable characters (control characters other than newline/tab).
- ``pass_rate_v1`` / ``rollouts_v1``: share of correct rollouts of the record's problem, and how many.

``steps_v1`` (every arithmetic step of the trace recomputed) is written by :mod:`frontload.filters.stepcheck`.

Invariant: a scorer yields every document it receives, in order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import regex
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.batching import batched
from datatrove.utils.word_tokenizers import WordTokenizer

from frontload.core.chat import THINK_CLOSE, THINK_OPEN, parse_response
from frontload.filters.verify import verify_answer

_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SENTENCES = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")


class RegexWordTokenizer(WordTokenizer):
    """Words and punctuation by regex; datatrove's default English tokenizer needs spaCy, not installed here."""

    def __init__(self) -> None:
        super().__init__("regex")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCES.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _SENTENCES.finditer(text) if m.group().strip()]


def group_key(meta: dict[str, Any]) -> str:
    """The problem a record answers: ``problem_id`` when present, else the problem text."""
    pid = meta.get("problem_id")
    return str(pid) if pid is not None else str(meta.get("problem") or "")


def completion_of(doc: Document) -> str:
    """The model output of a record: the raw completion, else the rendered response, else the text."""
    meta = doc.metadata
    return meta.get("completion") or meta.get("response") or doc.text or ""


def prediction_of(doc: Document) -> str | None:
    """The extracted answer: ``metadata.prediction`` or, when missing, parsed from the completion."""
    meta = doc.metadata
    if meta.get("prediction") is not None:
        return str(meta["prediction"])
    return parse_response(completion_of(doc)).answer


def _verify_batch(items: list[tuple[str, str | None, str]]) -> list[str]:
    return [verify_answer(g, p, m) for g, p, m in items]


class VerifyScorer(PipelineStep):
    """Writes ``verify_v1`` (and ``prediction`` when it had to be extracted) for every record.

    With ``workers > 1`` batches go to a process pool: each worker runs math-verify on its main
    thread, where its signal timeouts work, and the GIL no longer serializes sympy.
    """

    name = "✅ verify answers"
    type = "📊 - SCORER"

    def __init__(self, mode: str = "math", workers: int = 1, batch_size: int = 256, version: str = "v1") -> None:
        super().__init__()
        self.mode = mode
        self.workers = workers
        self.batch_size = batch_size
        self.key = f"verify_{version}"

    def _items(self, batch: list[Document]) -> list[tuple[str, str | None, str]]:
        items = []
        for doc in batch:
            pred = prediction_of(doc)
            if doc.metadata.get("prediction") is None and pred is not None:
                doc.metadata["prediction"] = pred
            gold = doc.metadata.get("answer")
            if gold is None or str(gold).strip() == "":
                self.stat_update("missing_gold")
                pred = None  # nothing to compare against: counted, scored unparseable
            items.append((str(gold or ""), pred, doc.metadata.get("verify_mode") or self.mode))
        return items

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        workers = self.workers
        if workers > 1 and multiprocessing.current_process().daemon:
            # Inside a datatrove worker pool (daemonic processes may not fork children): verify in-process.
            self.stat_update("verify_pool_unavailable")
            workers = 1
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            batches = (list(b) for b in batched(data, self.batch_size))
            if pool is None:
                scored = ((b, _verify_batch(self._items(b))) for b in batches)
            else:
                # Keep a few batches in flight; order is preserved by waiting on futures in order.
                scored = _ordered_pool(pool, batches, self._items, self.workers * 2)
            for batch, verdicts in scored:
                for doc, verdict in zip(batch, verdicts):
                    doc.metadata[self.key] = verdict
                    self.stat_update("total", f"verdict_{verdict}")
                    yield doc
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)


def _ordered_pool(pool, batches, make_items, depth):
    pending: list[tuple[list[Document], Any]] = []
    for batch in batches:
        pending.append((batch, pool.submit(_verify_batch, make_items(batch))))
        if len(pending) >= depth:
            b, fut = pending.pop(0)
            yield b, fut.result()
    for b, fut in pending:
        yield b, fut.result()


def repetition_measures(text: str) -> dict[str, float]:
    """Gopher repetition measures (Rae et al. 2021, table A1) using datatrove's own helpers."""
    out: dict[str, float] = {}
    total = max(len(text), 1)
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    lines = [line for line in text.split("\n") if line.strip()]
    n_par, c_par = find_duplicates(paragraphs)
    n_line, c_line = find_duplicates(lines)
    out["dup_para_frac"] = n_par / max(len(paragraphs), 1)
    out["dup_para_char_frac"] = c_par / total
    out["dup_line_frac"] = n_line / max(len(lines), 1)
    out["dup_line_char_frac"] = c_line / total
    words = [w for w in _WORDS.findall(text) if w[0].isalnum()]
    for n in (2, 3, 4):
        grams = get_n_grams(words, n)
        out[f"top_{n}gram_char_frac"] = find_top_duplicate(grams) / total if grams else 0.0
    for n in range(5, 11):
        out[f"dup_{n}gram_char_frac"] = find_all_duplicate(words, n) / total if len(words) >= n else 0.0
    return {k: round(v, 4) for k, v in out.items()}


def format_verdict(completion: str, meta: dict[str, Any]) -> str:
    """``ok`` when the thinking is opened and closed and an answer follows; else the first fault."""
    flags = meta.get("parse") or {}
    parsed = parse_response(completion)
    think_open = bool(flags.get("think_open")) or parsed.think_open
    think_closed = bool(flags.get("think_closed")) or parsed.think_closed
    if not think_open and not think_closed:
        return "no_think"
    if not think_closed:
        return "unclosed_think"
    if parsed.answer is None and meta.get("prediction") is None:
        return "no_answer"
    return "ok"


_NONPRINTABLE = regex.compile(r"[^\P{C}\n\t\r]")  # Unicode category C, in C code rather than a Python loop


def nonprintable_count(text: str) -> int:
    """Characters of Unicode category C (control, format, unassigned, private) other than newline and tab."""
    return len(_NONPRINTABLE.findall(text))


class QualityScorer(PipelineStep):
    """Writes ``format_v1``, ``length_v1``, ``repetition_v1``, ``truncated_v1`` and ``nonprintable_v1``."""

    name = "📏 format and quality scores"
    type = "📊 - SCORER"

    def __init__(self, tokenizer: str | None = None, version: str = "v1") -> None:
        super().__init__()
        self.tokenizer_path = tokenizer
        self.version = version
        self._tokenizer = None

    def _length(self, trace: str) -> int:
        if self.tokenizer_path is None:
            return len(trace.split())
        if self._tokenizer is None:
            from frontload.corpus.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return len(self._tokenizer.encode(trace))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        v = self.version
        for doc in data:
            meta = doc.metadata
            completion = completion_of(doc)
            trace = meta.get("trace")
            if trace is None:
                trace = parse_response(completion).think or ""
            with self.track_time():
                fmt = format_verdict(completion, meta)
                meta[f"format_{v}"] = fmt
                meta[f"length_{v}"] = self._length(trace)
                meta[f"repetition_{v}"] = repetition_measures(trace)
                meta[f"truncated_{v}"] = meta.get("finish_reason") == "length"
                meta[f"nonprintable_{v}"] = nonprintable_count(
                    completion.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
                )
            self.stat_update("total", f"format_{fmt}")
            yield doc


class PassRateCounter(PipelineStep):
    """Counts rollouts and correct ones per problem; rank ``r`` writes ``<folder>/<r>.json``.

    Run it as its own pipeline over the scored records; :class:`PassRateScorer` merges the files.
    """

    name = "🧮 count rollouts per problem"
    type = "📊 - SCORER"

    def __init__(self, folder: str, verify_key: str = "verify_v1") -> None:
        super().__init__()
        self.folder = folder
        self.verify_key = verify_key

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from frontload.core.fingerprint import atomic_write_json

        totals: Counter[str] = Counter()
        correct: Counter[str] = Counter()
        for doc in data:
            key = group_key(doc.metadata)
            totals[key] += 1
            correct[key] += doc.metadata.get(self.verify_key) == "correct"
            self.stat_update("total")
            yield doc
        atomic_write_json(Path(self.folder) / f"{rank:05d}.json", {k: [totals[k], correct[k]] for k in totals})


def read_pass_counts(folder: str | os.PathLike) -> dict[str, list[int]]:
    """Merged ``{problem: [rollouts, correct]}`` from every rank's :class:`PassRateCounter` file."""
    merged: dict[str, list[int]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        for key, (n, c) in json.loads(path.read_text(encoding="utf-8")).items():
            tot = merged.setdefault(key, [0, 0])
            tot[0] += n
            tot[1] += c
    return merged


class PassRateScorer(PipelineStep):
    """Writes ``pass_rate_v1`` (correct share of the problem's rollouts) and ``rollouts_v1``."""

    name = "🎯 pass rate per problem"
    type = "📊 - SCORER"

    def __init__(self, folder: str, version: str = "v1") -> None:
        super().__init__()
        self.folder = folder
        self.version = version

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        counts = read_pass_counts(self.folder)
        for doc in data:
            n, c = counts.get(group_key(doc.metadata), (0, 0))
            doc.metadata[f"pass_rate_{self.version}"] = round(c / n, 6) if n else 0.0
            doc.metadata[f"rollouts_{self.version}"] = n
            self.stat_update("total")
            yield doc
