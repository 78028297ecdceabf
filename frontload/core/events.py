"""Run folders: ``config.json`` plus append-only event files, the only way stages report results.

Layout of a run folder::

    RUN/config.json                     # written once, atomically: run id, stage, arm, phase, parent, config
    RUN/events/<kind>.rank<R>.jsonl     # one JSON object per line, appended and flushed per event

Each rank writes its own files, so parallel ranks and pipeline tasks never contend, and nobody but
``frontload.analysis`` touches DuckDB. Every event line carries ``v`` (schema version), ``run_id``,
``t`` (unix time) and ``seq`` (per-file counter), which make ingestion idempotent. A killed writer
leaves at most one partial last line, which readers skip.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from frontload.core.fingerprint import atomic_write_json

EVENT_SCHEMA_VERSION = 1
EVENT_KINDS = ("metrics", "evals", "predictions", "question_scores", "rollouts", "stats")


class RunFolder:
    """A stage's run folder; ``log(kind, **fields)`` appends one event line."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        stage: str,
        config: dict[str, Any],
        run_id: str | None = None,
        rank: int = 0,
        arm: str | None = None,
        phase: str | None = None,
        parent: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.rank = rank
        config_path = self.path / "config.json"
        if config_path.exists():
            # Resuming: keep the original run id so events of both attempts belong to one run.
            self.info = json.loads(config_path.read_text(encoding="utf-8"))
        else:
            self.info = {
                "schema_version": EVENT_SCHEMA_VERSION,
                "run_id": run_id or uuid.uuid4().hex[:12],
                "stage": stage,
                "arm": arm,
                "phase": phase,
                "parent": parent,
                "created": time.time(),
                "config": config,
                **(extra or {}),
            }
            if rank == 0:
                atomic_write_json(config_path, self.info)
        self.run_id: str = self.info["run_id"]
        (self.path / "events").mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Any] = {}
        self._seq: dict[str, int] = {}

    def _file(self, kind: str):
        if kind not in self._files:
            path = self.path / "events" / f"{kind}.rank{self.rank}.jsonl"
            seq = 0
            if path.exists():
                # Continue numbering after a resume; a torn last line (killed writer) is cut off first.
                data = path.read_bytes()
                if data and not data.endswith(b"\n"):
                    data = data[: data.rfind(b"\n") + 1]
                    path.write_bytes(data)
                seq = data.count(b"\n")
            self._files[kind] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends
            self._seq[kind] = seq
        return self._files[kind]

    def log(self, kind: str, **fields: Any) -> None:
        """Append one event of ``kind`` (metrics, evals, predictions, question_scores, rollouts, stats)."""
        f = self._file(kind)
        record = {"v": EVENT_SCHEMA_VERSION, "run_id": self.run_id, "t": time.time(), "seq": self._seq[kind], **fields}
        self._seq[kind] += 1
        f.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """Complete event records of one file, and the number of lines that could not be read."""
    records, bad = [], 0
    data = Path(path).read_bytes()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    return records, bad
