"""Document readers: JSON Lines (.jsonl, .ndjson, .json; plain, .gz, .zst), Parquet and saved HF datasets.

:func:`make_reader` turns input paths (files, folders, corpus folders, ``save_to_disk`` datasets)
into one datatrove :class:`CorpusReader` step that yields :class:`datatrove.data.Document` s and
shards its files across datatrove tasks by rank.

Invariants:

* Nothing is lost silently. Every input record becomes a document or a reject: a malformed JSONL
  line, invalid UTF-8, a record that is not an object, a missing or non-string text field, an
  empty text. A reject is counted by reason (datatrove stats ``dropped/<reason>``), and written as
  one JSON line ``{file, line, reason, error, raw}`` to ``rejects/<rank>.jsonl`` when a rejects
  folder is given; with ``on_error="raise"`` the first one raises a :class:`ReadError` naming the
  file and line (1-based; the row number for Parquet and datasets).
* A rejects file appears only when its task finished reading (temporary name, then rename).
* Fields are dotted paths into the raw record (``metadata.prompt``); a record's other keys become
  its metadata, as datatrove's own readers do.
* SFT reading (``sft=True``) yields documents whose metadata holds ``prompt`` and ``response``
  (from the configured fields or from chat ``messages``) and whose text is ``prompt + response``.
* One rule (:func:`input_files`) decides which files of a folder are read, and
  :func:`input_fingerprint` hashes exactly those files: recursive, sorted by relative path, hidden
  files and folders (``.name``) and backups (``*.bak``, ``*~``, ``*.tmp``) skipped, JSON Lines
  (``.jsonl``, ``.ndjson``, ``.json`` when its first line is a JSON object, each also ``.gz``/``.zst``)
  and Parquet read, mixed in one folder if need be. A folder with no such file is an error naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader

from frontload.core.chat import ASSISTANT, END, SYSTEM, USER
from frontload.core.errors import FrontloadError
from frontload.core.manifest import MANIFEST_NAME
from frontload.core.progress import progress_bar

JSONL_SUFFIXES = (".jsonl", ".ndjson")  # always JSON Lines; ``.json`` only when its first line is an object
COMPRESSED_SUFFIXES = (".gz", ".zst")  # a JSON Lines file may carry one of these
PARQUET_SUFFIXES = (".parquet",)
BACKUP_SUFFIXES = (".bak", "~", ".tmp")  # editor and tool leftovers, never documents
REJECT_RAW_CHARS = 500
DROP_REASONS = ("malformed_json", "invalid_utf8", "not_an_object", "missing_field", "bad_type", "empty_text")


class ReadError(FrontloadError):
    """A bad input record when ``on_error="raise"``; the message names file and line."""


@dataclass(kw_only=True)
class RecordSpec:
    """Which fields of a raw record make a document."""

    text_field: str = "text"  # dotted path of the text (pretraining)
    sft: bool = False  # read prompt/response pairs instead of plain text
    prompt_field: str = "metadata.prompt"  # dotted path of the prompt (SFT)
    response_field: str = "metadata.response"  # dotted path of the response (SFT)
    messages_field: str = "messages"  # chat messages [{role, content}], used when prompt/response are absent
    id_field: str = "id"  # dotted path of the record id; "<file>:<line>" when absent


class Reject(Exception):
    """One bad record: ``reason`` is a key of the drop account."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


_MISSING = object()


def _at(record: dict[str, Any], dotted: str) -> Any:
    cur: Any = record
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def get_field(record: dict[str, Any], dotted: str) -> Any:
    """Value at a dotted path (``metadata.prompt``), or a sentinel when absent.

    A record's top-level keys become its metadata, so ``metadata.prompt`` also finds a top-level
    ``prompt`` (a plain ``{"prompt", "response"}`` SFT file needs no field options).
    """
    value = _at(record, dotted)
    if value is _MISSING and dotted.startswith("metadata."):
        value = _at(record, dotted.removeprefix("metadata."))
    return value


def render_messages(messages: Any) -> tuple[str, str]:
    """``(prompt, response)`` of a chat: every turn before the last assistant turn is prompt."""
    if not isinstance(messages, list) or not messages:
        raise Reject("bad_type", "messages must be a non-empty list of {role, content}")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise Reject("missing_field", "the last message must have role 'assistant'")
    parts = []
    for m in messages[:-1]:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise Reject("bad_type", "each message needs a string 'content'")
        role, content = m.get("role"), m["content"]
        if role == "system":
            parts.append(f"{SYSTEM}\n{content.strip()}\n")
        elif role == "user":
            parts.append(f"{USER}\n{content.strip()}\n")
        elif role == "assistant":
            parts.append(f"{ASSISTANT}\n{content}{'' if content.endswith(END) else END}")
        else:
            raise Reject("bad_type", f"unknown message role {role!r}")
    content = last.get("content")
    if not isinstance(content, str):
        raise Reject("bad_type", "each message needs a string 'content'")
    return "".join(parts) + f"{ASSISTANT}\n", content


def _string(value: Any, name: str, hint: str) -> str:
    if value is _MISSING:
        raise Reject("missing_field", f"no field {name!r}{hint}")
    if not isinstance(value, str):
        raise Reject("bad_type", f"field {name!r} is {type(value).__name__}, not a string")
    return value


# -- which files are read: one rule for every reader and for the input fingerprint --------------------
def _strip_compression(name: str) -> str:
    for c in COMPRESSED_SUFFIXES:
        if name.endswith(c):
            return name[: -len(c)]
    return name


def file_format(path: Path) -> str | None:
    """``"jsonl"``, ``"parquet"`` or None (not a document file) for one file name."""
    name = path.name
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    base = _strip_compression(name)
    if base.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if base.endswith(".json"):
        return "jsonl" if _is_json_lines(path) else None
    return None


def _open_bytes(path: Path) -> Any:
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        import zstandard

        return zstandard.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def _is_json_lines(path: Path) -> bool:
    # A ``.json`` file is JSON Lines when its first non-blank line is a whole JSON object; a pretty
    # printed document (a config, a dataset_info.json) is not, and is left alone.
    import orjson

    try:
        with _open_bytes(path) as f:
            for line in f:
                if line.strip():
                    return isinstance(orjson.loads(line), dict)
    except (OSError, orjson.JSONDecodeError, EOFError):
        return False
    return False


def _skipped(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts) or rel.name.endswith(BACKUP_SUFFIXES)


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``datasets.save_to_disk``."""
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def document_folder(path: Path) -> Path:
    """The folder whose files are read: a corpus folder's ``data/`` (never its ``rejects/``), else ``path``."""
    if (path / MANIFEST_NAME).exists() and (path / "data").is_dir():
        return path / "data"
    return path


def folder_files(folder: Path) -> list[Path]:
    """The document files of one folder by the rule (none when the folder is absent)."""
    if not folder.is_dir():
        return []
    return [
        p
        for p in sorted(folder.rglob("*"), key=lambda q: q.relative_to(folder).as_posix())
        if p.is_file() and not _skipped(p.relative_to(folder)) and file_format(p) is not None
    ]


def input_files(path: str | os.PathLike) -> list[Path]:
    """The files read from one input (a file, a folder, a corpus folder), in reading order.

    The rule of the module docstring; a folder that yields no file is a FrontloadError naming it,
    and so is a named file that is not JSON Lines or Parquet.
    """
    path = Path(str(path).split("::", 1)[0])
    if not path.exists():
        raise FrontloadError(f"{path}: no such input file or folder")
    if path.is_file():
        if file_format(path) is None:
            raise FrontloadError(
                f"{path}: not a document file (read: .jsonl, .ndjson, .json holding JSON Lines, "
                "each optionally .gz/.zst, and .parquet)"
            )
        return [path]
    if is_saved_dataset(path):
        return sorted(p for p in path.rglob("*") if p.is_file() and not _skipped(p.relative_to(path)))
    folder = document_folder(path)
    files = folder_files(folder)
    if not files:
        raise FrontloadError(
            f"{folder}: no readable document files (read: .jsonl, .ndjson, .json holding JSON Lines, each "
            "optionally .gz/.zst, and .parquet; hidden files and *.bak, *~, *.tmp are skipped)"
        )
    return files


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's decompressed bytes: gzip and zstd headers carry times that are not content."""
    import hashlib

    h = hashlib.sha256()
    try:
        with _open_bytes(Path(path)) as f:
            while block := f.read(1 << 22):
                h.update(block)
    except (OSError, EOFError, ValueError) as e:  # gzip and zstd report damage as these
        raise ReadError(f"{path}: cannot read the file (damaged or truncated?): {type(e).__name__}: {e}") from None
    return h.hexdigest()


def input_fingerprint(inputs: Sequence[str | os.PathLike]) -> str:
    """Content hash of exactly the files :func:`input_files` reads, by name relative to each input.

    A frontload corpus folder stands for its ``data/`` by its manifest's fingerprint (made from the
    content and config that built it), which is also what analysis joins shard sets to corpora on.
    """
    from frontload.core.fingerprint import fingerprint
    from frontload.core.manifest import Manifest, ManifestError

    parts = []
    for raw in inputs:
        base, _, split = str(raw).partition("::")
        p = Path(base)
        if p.is_dir() and document_folder(p) != p:
            try:
                parts.append(["manifest", Manifest.read(p).fingerprint, split])
                continue
            except ManifestError:
                pass
        root = p.parent if p.is_file() else (p if is_saved_dataset(p) else document_folder(p))
        parts.append([[f.relative_to(root).as_posix(), content_sha256(f)] for f in input_files(p)] + [split])
    if len(parts) == 1 and parts[0][0] == "manifest" and not parts[0][2]:
        return parts[0][1]  # one whole corpus folder: its own fingerprint, so the two can be joined
    return fingerprint(parts)


class RecordChecker:
    """Turns raw records into Documents or rejects, and keeps the rejects file of one task."""

    def __init__(self, spec: RecordSpec, on_error: str, rejects_dir: str | None) -> None:
        if on_error not in ("drop", "raise"):
            raise FrontloadError(f"on_error must be 'drop' or 'raise', got {on_error!r}")
        self.spec = spec
        self.on_error = on_error
        self.rejects_dir = rejects_dir
        self._sink: Any = None
        self._sink_paths: tuple[Path, Path] | None = None
        self.counts: dict[str, int] = {}
        self.step: PipelineStep | None = None

    # -- the rejects file of one task --------------------------------------------------------
    def open(self, rank: int) -> None:
        if self.rejects_dir is None:
            return
        folder = Path(self.rejects_dir)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{rank:05d}.jsonl"
        tmp = folder / f".{rank:05d}.jsonl.tmp"
        self._sink_paths = (tmp, final)
        self._sink = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()

    def finish(self) -> None:
        if self._sink is not None:
            self._sink.close()
            tmp, final = self._sink_paths
            os.replace(tmp, final)
            self._sink = None

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink_paths[0].unlink(missing_ok=True)
            self._sink = None

    def reject(self, source: str, line: int, reason: str, error: str, raw: Any) -> None:
        where = f"{source}:{line}"
        if self.on_error == "raise":
            raise ReadError(f"{where}: {reason}: {error}")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.step is not None:
            self.step.stat_update(f"dropped/{reason}")
        if self._sink is not None:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            elif not isinstance(raw, str):
                raw = json.dumps(raw, ensure_ascii=False, default=str)
            record = {"file": source, "line": line, "reason": reason, "error": error, "raw": raw[:REJECT_RAW_CHARS]}
            self._sink.write(json.dumps(record, ensure_ascii=False) + "\n")

    # -- records ---------------------------------------------------------------------------
    def document(self, record: Any, source: str, line: int) -> Document | None:
        """The Document of a raw record, or None after counting/writing the reject."""
        try:
            return self._build(record, source, line)
        except Reject as r:
            self.reject(source, line, r.reason, r.error, record)
            return None

    def _build(self, record: Any, source: str, line: int) -> Document:
        spec = self.spec
        if not isinstance(record, dict):
            raise Reject("not_an_object", f"expected a JSON object, got {type(record).__name__}")
        if spec.sft:
            prompt = get_field(record, spec.prompt_field)
            response = get_field(record, spec.response_field)
            if prompt is _MISSING and response is _MISSING and get_field(record, spec.messages_field) is not _MISSING:
                prompt, response = render_messages(get_field(record, spec.messages_field))
            hint = f" (nor {spec.messages_field!r}; keys: {sorted(record)[:10]})"
            prompt = _string(prompt, spec.prompt_field, hint)
            response = _string(response, spec.response_field, hint)
            if not response.strip():
                raise Reject("empty_text", f"field {spec.response_field!r} is empty")
            text = prompt + response
        else:
            text = _string(get_field(record, spec.text_field), spec.text_field, f" (keys: {sorted(record)[:10]})")
            if not text.strip():
                raise Reject("empty_text", f"field {spec.text_field!r} is empty")
        doc_id = get_field(record, spec.id_field)
        metadata = record.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        for k, v in record.items():
            if k not in ("metadata", "text", spec.id_field.split(".")[0]) and k != spec.text_field:
                metadata.setdefault(k, v)
        if spec.sft:
            metadata["prompt"], metadata["response"] = prompt, response
        return Document(
            text=text, id=str(doc_id) if doc_id is not _MISSING else f"{Path(source).name}:{line}", metadata=metadata
        )


class CheckedJsonlReader(JsonlReader):
    """datatrove's JsonlReader, reading bytes per line so that bad lines are counted and named."""

    def __init__(self, data_folder: str, checker: RecordChecker, **kwargs: Any) -> None:
        super().__init__(data_folder, add_file_path=False, **kwargs)
        self.checker = checker

    def read_file(self, filepath: str) -> DocumentsPipeline:
        source = self.data_folder.resolve_paths(filepath)
        try:
            yield from self._read_lines(filepath, source)
        except (OSError, EOFError) as e:  # a truncated or damaged gzip/zstd stream
            raise ReadError(
                f"{source}: cannot read the file (damaged or truncated?): {type(e).__name__}: {e}"
            ) from None

    def _read_lines(self, filepath: str, source: str) -> DocumentsPipeline:
        import orjson

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for li, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # a blank line holds no record
                with self.track_time():
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        self.checker.reject(source, li, "invalid_utf8", str(e), raw)
                        continue
                    try:
                        record = orjson.loads(raw)
                    except orjson.JSONDecodeError as e:
                        self.checker.reject(source, li, "malformed_json", str(e), raw)
                        continue
                    doc = self.checker.document(record, source, li)
                if doc is not None:
                    yield doc


class CheckedParquetReader(ParquetReader):
    """datatrove's ParquetReader with per-row checks; ``line`` in a reject is the 1-based row."""

    def __init__(self, data_folder: str, checker: RecordChecker, **kwargs: Any) -> None:
        super().__init__(data_folder, **kwargs)
        self.checker = checker

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow as pa

        source = self.data_folder.resolve_paths(filepath)
        try:
            yield from self._read_rows(filepath, source)
        except (pa.ArrowException, OSError) as e:  # pyarrow's own errors, not a bad record
            raise ReadError(f"{source}: not a readable Parquet file (damaged or truncated?): {e}") from None

    def _read_rows(self, filepath: str, source: str) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        row = 0
        with self.data_folder.open(filepath, "rb") as f, pq.ParquetFile(f) as pqf:
            for batch in pqf.iter_batches(batch_size=self.batch_size):
                docs = []
                with self.track_time("batch"):
                    for record in batch.to_pylist():
                        row += 1
                        doc = self.checker.document(record, source, row)
                        if doc is not None:
                            docs.append(doc)
                yield from docs


class SavedDatasetReader(BaseReader):
    """A dataset saved with ``datasets.Dataset.save_to_disk``, split into contiguous row ranges per rank."""

    name = "🤗 saved dataset"
    _requires_dependencies = ["datasets"]

    def __init__(self, path: str, checker: RecordChecker, split: str | None = None, batch_size: int = 1000) -> None:
        super().__init__()
        self.path = path
        self.split = split
        self.checker = checker
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datasets import DatasetDict, load_from_disk

        if data:
            yield from data
        ds = load_from_disk(self.path)
        if isinstance(ds, DatasetDict):
            if self.split is None:
                if len(ds) != 1:
                    raise FrontloadError(f"{self.path}: a dataset with splits {list(ds)}; name one as PATH::SPLIT")
                self.split = next(iter(ds))
            ds = ds[self.split]
        n = len(ds)
        start, stop = n * rank // world_size, n * (rank + 1) // world_size
        row = start
        for batch in ds.select(range(start, stop)).iter(self.batch_size):
            docs = []
            with self.track_time("batch"):
                for values in zip(*batch.values()):
                    row += 1
                    doc = self.checker.document(dict(zip(batch, values)), self.path, row)
                    if doc is not None:
                        docs.append(doc)
            yield from docs


class CorpusReader(PipelineStep):
    """One datatrove reader step over several inputs; owns the checks and the rejects file."""

    name = "📖 frontload corpus reader"
    type = "📖 - READER"

    def __init__(self, inputs: Sequence[str | os.PathLike], checker: RecordChecker, progress: bool = False):
        super().__init__()
        self.inputs = [str(p) for p in inputs]
        self.checker = checker
        self.progress = progress
        # (reader, file relative to the reader's folder) in reading order, and the saved datasets.
        self.units: list[tuple[BaseDiskReader, str]] = []
        self.datasets: list[SavedDatasetReader] = []
        for p in self.inputs:
            self._add_input(p)

    def _add_input(self, raw: str) -> None:
        base, sep, split = raw.partition("::")
        path = Path(base)
        files = input_files(path)
        if path.is_dir() and is_saved_dataset(path):
            self.datasets.append(SavedDatasetReader(str(path), self.checker, split=split if sep else None))
            return
        folder = path.parent if path.is_file() else document_folder(path)
        common = dict(doc_progress=False, file_progress=False)
        readers: dict[str, BaseDiskReader] = {}
        for f in files:
            fmt = file_format(f)
            if fmt not in readers:
                cls = CheckedParquetReader if fmt == "parquet" else CheckedJsonlReader
                readers[fmt] = cls(str(folder), self.checker, **common)
            self.units.append((readers[fmt], f.relative_to(folder).as_posix()))

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self.checker.step = self
        self.checker.open(rank)
        try:
            for doc in self._documents(rank, world_size):
                self.stat_update("kept")
                yield doc
        except BaseException:
            self.checker.abort()
            raise
        self.checker.finish()

    def _documents(self, rank: int, world_size: int) -> DocumentsPipeline:
        # Files of all inputs are dealt out together, so one-file inputs still spread over the tasks.
        mine = self.units[rank::world_size]
        for reader, f in progress_bar(
            mine, desc=f"task {rank}", unit="file", position=rank, disable=not self.progress
        ):
            yield from reader.read_files_shard([f])
        for reader in self.datasets:
            yield from reader.run(None, rank, world_size)  # split by contiguous row ranges


def make_reader(
    inputs: Sequence[str | os.PathLike],
    spec: RecordSpec | None = None,
    *,
    on_error: str = "drop",
    rejects_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> CorpusReader:
    """A datatrove reader step over ``inputs``; bad records are dropped (counted) or raise, per ``on_error``."""
    if not inputs:
        raise FrontloadError("no inputs given")
    checker = RecordChecker(spec or RecordSpec(), on_error, str(rejects_dir) if rejects_dir is not None else None)
    return CorpusReader(inputs, checker, progress=progress)


def read_documents(
    inputs: Sequence[str | os.PathLike],
    spec: RecordSpec | None = None,
    *,
    on_error: str = "drop",
    rejects_dir: str | os.PathLike | None = None,
) -> Iterator[Document]:
    """Documents of ``inputs`` read in this process (one task); see :func:`make_reader`."""
    reader = make_reader(inputs, spec, on_error=on_error, rejects_dir=rejects_dir)
    yield from reader.run(None, 0, 1)


def iter_texts(inputs: Sequence[str | os.PathLike], text_field: str = "text") -> Iterator[str]:
    """The text of every document in ``inputs`` (bad records dropped)."""
    for doc in read_documents(inputs, RecordSpec(text_field=text_field)):
        yield doc.text
