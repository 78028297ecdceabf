"""Deduplication of problems and traces: exact (normalized text) and near-duplicate (datatrove MinHash).

Records are rollouts, so several records legitimately share one problem. Problem deduplication
therefore works on *problem groups* (``problem_id``, else the problem text): among groups whose
normalized problem text is equal (exact) or whose problems fall in one MinHash cluster (near), the
first group is kept and the records of the others are dropped. Trace deduplication works on records:
among records with equal normalized traces the first is kept. "First" is the order of the input
files, so reruns drop the same records.

Planning is one pass over the selected records (:class:`DedupPlanner`, a single task) that writes
``{row: reason}`` for every record to drop; :class:`DropListFilter` then drops them in parallel
with the reason, so each drop lands in ``rejects/`` and in the account.

Reasons: ``dedup:exact_problem``, ``dedup:minhash_problem``, ``best_of_problem``, ``dedup:exact_trace``
and ``dedup:minhash_trace``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from frontload.core.fingerprint import atomic_write_json
from frontload.filters.scores import group_key

ROW_KEY = "filter_row"  # unique per input record (rank/index); record ids may repeat in planted duplicates


def normalize_for_dedup(text: str) -> str:
    """Lower case, whitespace collapsed, trailing punctuation dropped: what makes two texts "the same"."""
    return " ".join(str(text).lower().split()).rstrip(" .?!")


def text_hash(text: str) -> str:
    """Short stable hash of normalized text."""
    return hashlib.blake2b(normalize_for_dedup(text).encode(), digest_size=12).hexdigest()


class RowTagger(PipelineStep):
    """Stamps ``metadata.filter_row = "<rank>/<index>"``, a key unique per input record for later plans."""

    name = "🏷️ row keys"
    type = "🔢 - TAGGER"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for i, doc in enumerate(data):
            doc.metadata[ROW_KEY] = f"{rank:05d}/{i}"
            yield doc


class FieldAsText(PipelineStep):
    """Puts a metadata field (``problem``, ``trace``) in ``doc.text`` so MinHash stages hash that field."""

    name = "🔁 field as text"
    type = "🔢 - TAGGER"

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            doc.text = str(doc.metadata.get(self.field) or "")
            yield doc


class ProblemGroups(PipelineStep):
    """One pass (single task): yields one document per problem group (text = problem) for MinHash, and
    writes ``<plan_dir>/exact_problem.json`` with the groups whose normalized problem repeats an earlier one.
    """

    name = "📚 problem groups"
    type = "🫂 - DEDUP"

    def __init__(self, plan_dir: str, exact: bool = True) -> None:
        super().__init__()
        self.plan_dir = plan_dir
        self.exact = exact

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if world_size != 1:
            raise ValueError("ProblemGroups needs a single task (it sees every record)")
        seen_groups: set[str] = set()
        first_by_text: dict[str, str] = {}
        dropped: dict[str, str] = {}
        for doc in data:
            self.stat_update("total")
            group = group_key(doc.metadata)
            if group in seen_groups:
                continue
            seen_groups.add(group)
            h = text_hash(doc.metadata.get("problem") or doc.text)
            if self.exact and h in first_by_text:
                dropped[group] = "dedup:exact_problem"
                self.stat_update("dropped_groups")
                continue
            first_by_text[h] = group
            self.stat_update("groups")
            yield Document(text=str(doc.metadata.get("problem") or ""), id=group, metadata={"group": group})
        atomic_write_json(Path(self.plan_dir) / "exact_problem.json", dropped)


def read_removed_groups(folder: str | os.PathLike) -> set[str]:
    """Group keys of the problem documents a MinHash filter wrote to its exclusion folder."""
    groups: set[str] = set()
    for path in sorted(Path(folder).glob("*.jsonl")) if Path(folder).exists() else []:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    groups.add(json.loads(line)["id"])
    return groups


def _best_key(meta: dict[str, Any]) -> tuple:
    # Correct before wrong, well-formed before not, untruncated, then the shorter trace (less padding).
    return (
        meta.get("verify_v1") != "correct",
        meta.get("format_v1") != "ok",
        bool(meta.get("truncated_v1")),
        meta.get("length_v1") if isinstance(meta.get("length_v1"), int) else 1 << 30,
        meta.get(ROW_KEY, ""),
    )


class DedupPlanner(PipelineStep):
    """One pass (single task) over the selected records; writes ``<plan_dir>/drops.json`` = ``{row: reason}``.

    Applies, in order: problem groups dropped by exact or MinHash problem dedup; with ``keep="best"``
    every record but the best of its group (:func:`_best_key`); then exact trace duplicates among the
    survivors. Yields nothing.
    """

    name = "🗺️ dedup plan"
    type = "🫂 - DEDUP"

    def __init__(self, plan_dir: str, keep: str = "all", exact_trace: bool = True, minhash_removed: str | None = None):
        super().__init__()
        self.plan_dir = plan_dir
        self.keep = keep
        self.exact_trace = exact_trace
        self.minhash_removed = minhash_removed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if world_size != 1:
            raise ValueError("DedupPlanner needs a single task (it sees every record)")
        plan = Path(self.plan_dir)
        group_drops: dict[str, str] = json.loads((plan / "exact_problem.json").read_text(encoding="utf-8"))
        if self.minhash_removed:
            for g in read_removed_groups(self.minhash_removed):
                group_drops.setdefault(g, "dedup:minhash_problem")
        drops: dict[str, str] = {}
        best: dict[str, tuple] = {}
        survivors: list[tuple[str, str, str]] = []  # (row, group, trace hash), in input order
        for doc in data:
            self.stat_update("total")
            meta, row = doc.metadata, doc.metadata[ROW_KEY]
            group = group_key(meta)
            if group in group_drops:
                drops[row] = group_drops[group]
                continue
            if self.keep == "best":
                key = _best_key(meta)
                if group not in best or key < best[group]:
                    best[group] = key
            trace = meta.get("trace") or meta.get("response") or doc.text
            survivors.append((row, group, text_hash(trace)))
        best_rows = {key[-1] for key in best.values()}
        first_trace: set[str] = set()
        for row, _group, h in survivors:
            if self.keep == "best" and row not in best_rows:
                drops[row] = "best_of_problem"
            elif self.exact_trace and h in first_trace:
                drops[row] = "dedup:exact_trace"
            else:
                first_trace.add(h)
        for reason in drops.values():
            self.stat_update(f"plan_{reason}")
        atomic_write_json(plan / "drops.json", drops)
        return
        yield  # a generator that yields nothing: the plan is its only output


class DropListFilter(BaseFilter):
    """Drops the records a :class:`DedupPlanner` listed, each with its planned reason."""

    name = "🫂 apply dedup plan"

    def __init__(self, plan_file: str, exclusion_writer: DiskWriter = None) -> None:
        super().__init__(exclusion_writer)
        self.plan_file = plan_file
        self._drops: dict[str, str] | None = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._drops is None:
            self._drops = json.loads(Path(self.plan_file).read_text(encoding="utf-8"))
        reason = self._drops.get(doc.metadata.get(ROW_KEY))
        return True if reason is None else (False, reason)
