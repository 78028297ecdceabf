"""The ``manifest.json`` that sits beside every corpus folder and shard set.

A manifest records what a folder holds and how it was made: its kind (``corpus`` or ``shards``), a
schema version, the fingerprint of its inputs and config, counts, and for corpora the drop account
``in = kept + sum(dropped.values())``. Readers refuse unknown schema versions by name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write_json

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


class ManifestError(FrontloadError, ValueError):
    """A manifest is missing, unreadable, of the wrong kind or inconsistent; the message names the file."""


@dataclass(kw_only=True)
class Account:
    """Where every input record went: ``inputs == kept + sum(dropped.values())``."""

    inputs: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    @property
    def balanced(self) -> bool:
        return self.inputs == self.kept + sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"in": self.inputs, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Account:
        return cls(inputs=int(d["in"]), kept=int(d["kept"]), dropped={k: int(v) for k, v in d["dropped"].items()})


@dataclass(kw_only=True)
class Manifest:
    """Contents of ``manifest.json``; ``extra`` holds kind-specific fields (files, dtype, ...)."""

    kind: str
    fingerprint: str
    config: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    account: Account | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["account"] = self.account.to_dict() if self.account else None
        d.update(self.extra)
        return d

    def write(self, folder: str | os.PathLike) -> Path:
        if self.account is not None and not self.account.balanced:
            raise ManifestError(f"{folder}: drop account does not balance: {self.account.to_dict()}")
        return atomic_write_json(Path(folder) / MANIFEST_NAME, self.to_dict())

    @classmethod
    def read(cls, folder: str | os.PathLike, kind: str | None = None) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.exists():
            raise ManifestError(f"{path}: no manifest (is {folder} a finished frontload output?)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: not valid JSON: {e}") from e
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{path}: unknown schema_version {version!r} (this frontload reads {SCHEMA_VERSION})")
        if kind is not None and d.get("kind") != kind:
            raise ManifestError(f"{path}: expected a {kind!r} manifest, found {d.get('kind')!r}")
        known = {"kind", "fingerprint", "config", "counts", "account", "schema_version"}
        account = d.get("account")
        return cls(
            kind=d["kind"],
            fingerprint=d["fingerprint"],
            config=d.get("config") or {},
            counts=d.get("counts") or {},
            account=Account.from_dict(account) if account else None,
            extra={k: v for k, v in d.items() if k not in known},
            schema_version=version,
        )


class EmptyOutputError(FrontloadError):
    """A command kept no record at all; the message carries the drop account and where the rejects are."""


def _first_reject(rejects: Path) -> str | None:
    for f in sorted(rejects.rglob("*.jsonl")) if rejects.is_dir() else []:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    return None
                if "error" in d:  # a reader's reject: {file, line, reason, error}
                    return f"{d.get('file')}:{d.get('line')}: {d['error']}"
                return str((d.get("metadata") or {}).get("filter_reason"))
    return None


def require_records(
    account: Account,
    where: str | os.PathLike,
    rejects: Path | None,
    allow_empty: bool,
    hint: str = "pass --allow-empty to keep an empty output",
) -> None:
    """Refuse an output that keeps no record, unless ``allow_empty``: an empty corpus or shard set is
    almost always a wrong field name or a wrong input, and would otherwise pass every later check."""
    if allow_empty or account.kept > 0:
        return
    if account.inputs == 0:
        raise EmptyOutputError(f"{where}: the input holds no records; {hint}")
    reasons = ", ".join(f"{r} ({n})" for r, n in sorted(account.dropped.items(), key=lambda kv: -kv[1]))
    first = _first_reject(rejects) if rejects is not None else None
    example = f"; first: {first}" if first else ""
    see = f" — see {rejects}/" if rejects is not None else ""
    raise EmptyOutputError(
        f"{where}: {sum(account.dropped.values())} of {account.inputs} records dropped: {reasons}{example}{see}; {hint}"
    )
