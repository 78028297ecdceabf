"""Megatron shard sets: documents → ``<NNNNN>.bin/.idx`` (plus ``<NNNNN>_mask.bin/.idx`` for SFT) + manifest.

A datatrove pipeline (:class:`~frontload.corpus.readers.CorpusReader` →
:class:`MegatronShardWriter`, an extension of datatrove's ``MegatronDocumentTokenizer``) runs under
``LocalPipelineExecutor``; task ``r`` writes shard ``r`` from its share of the input files.

Layout of a shard set::

    OUT/00000.bin  OUT/00000.idx            # token ids, one sequence per document, EOD appended
    OUT/00000_mask.bin  OUT/00000_mask.idx  # SFT only: uint8 loss mask, same lengths as the tokens
    OUT/rejects/00000.jsonl                 # records that were dropped, with file, line and reason
    OUT/logs/                               # datatrove's logs, stats and completion markers
    OUT/config.json  OUT/events/            # run folder (stage "shards"): a ``stats`` event
    OUT/manifest.json                       # kind "shards": counts, drop account, sha256 of every file

Invariants:

* Megatron-core's ``IndexedDataset(prefix)`` reads every shard and returns exactly
  ``tokenizer.encode(text) + [eod_id]`` per document (SFT: ``encode(prompt) + encode(response)
  + [eod_id]``, mask 0 on the prompt and 1 on the response, its ``<|end|>`` and the EOD).
* The token dtype follows the vocabulary: uint16 up to 65,536 ids, else int32.
* Every output file appears only when complete (temporary name, then rename); the manifest is
  written last. A killed run rerun with the same inputs redoes only unfinished tasks (datatrove's
  completion markers) and produces byte-identical shards.
* Every input record is a document in a shard or a line in ``rejects/``:
  ``account.in == kept + sum(dropped)``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer, MegatronTokenizedFile
from datatrove.utils.batching import batched

from frontload.core.chat import END
from frontload.core.config import ConfigError, as_dict
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import fingerprint, sha256_file
from frontload.core.manifest import MANIFEST_NAME, Account, Manifest, require_records
from frontload.corpus.readers import RecordSpec, input_fingerprint, make_reader
from frontload.corpus.tokenizer import Tokenizer, load_tokenizer

UINT16_VOCAB_LIMIT = 65536
_DTYPE_CODES = {"uint8": 1, "int32": 4, "uint16": 8}  # Megatron-core's indexed_dataset.DType codes


def token_dtype(vocab_size: int) -> str:
    """The narrowest dtype Megatron reads that holds every id of a vocabulary."""
    return "uint16" if vocab_size <= UINT16_VOCAB_LIMIT else "int32"


@dataclass(kw_only=True)
class ShardConfig:
    """How documents become a shard set."""

    text_field: str = "text"  # dotted path of the text to tokenize (pretraining)
    sft: bool = False  # prompt/response records: write a loss mask beside the tokens
    prompt_field: str = "metadata.prompt"  # dotted path of the prompt (SFT)
    response_field: str = "metadata.response"  # dotted path of the response (SFT)
    messages_field: str = "messages"  # chat messages used when prompt/response are absent (SFT)
    tasks: int = 2  # datatrove tasks = shards; each reads every tasks-th input file
    workers: int = 2  # processes running tasks at once (does not change the output)
    batch_size: int = 1000  # documents per encode call
    on_error: str = "drop"  # "drop" counts bad records into rejects/, "raise" stops at the first

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ConfigError("tasks", f"must be at least 1, got {self.tasks}")
        if self.workers < 1:
            raise ConfigError("workers", f"must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.on_error not in ("drop", "raise"):
            raise ConfigError("on_error", f"must be 'drop' or 'raise', got {self.on_error!r}")

    def record_spec(self) -> RecordSpec:
        """The reader's view of these fields."""
        return RecordSpec(
            text_field=self.text_field,
            sft=self.sft,
            prompt_field=self.prompt_field,
            response_field=self.response_field,
            messages_field=self.messages_field,
        )

    @property
    def output_fields(self) -> dict[str, Any]:
        """The fields that decide the bytes of the shards (workers and batch size do not)."""
        d = as_dict(self)
        for k in ("workers", "batch_size"):
            d.pop(k)
        return d


class AtomicTokenizedFile(MegatronTokenizedFile):
    """datatrove's Megatron file writer, writing to temporary names renamed on close; uint8 for masks."""

    def __init__(self, output_folder: Any, filename: str, token_size: int) -> None:
        self.final_name = filename
        super().__init__(output_folder, f".{filename}.tmp", token_size=max(token_size, 2))
        if token_size == 1:
            self.token_size, self.token_dtype, self.token_dtype_code = 1, np.uint8, _DTYPE_CODES["uint8"]

    def write_batch(self, sequences: Sequence[Sequence[int]]) -> None:
        """Append several documents with one write (the per-document path of datatrove is slower)."""
        lengths = [len(s) for s in sequences]
        flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=self.token_dtype, count=sum(lengths))
        self.bin_file.write(flat.tobytes(order="C"))
        start = len(self.sequence_lengths)
        self.sequence_lengths.extend(lengths)
        self.document_indices.extend(range(start + 1, start + 1 + len(lengths)))

    def _local(self, name: str) -> str:
        return self.output_folder.resolve_paths(name)

    def close(self) -> None:
        super().close()
        for ext in (".bin", ".idx"):
            os.replace(self._local(f"{self.filename}{ext}"), self._local(f"{self.final_name}{ext}"))

    def discard(self) -> None:
        """Remove the temporary files: an empty shard (Megatron cannot map a zero-byte ``.bin``) or a failed task."""
        self.bin_file.close()
        for ext in (".bin", ".idx"):
            Path(self._local(f"{self.filename}{ext}")).unlink(missing_ok=True)


class MegatronShardWriter(MegatronDocumentTokenizer):
    """datatrove's ``MegatronDocumentTokenizer`` with a frontload tokenizer, atomic files and SFT masks."""

    name = "🧱 frontload Megatron shards"

    def __init__(
        self, output_folder: str, tokenizer: Tokenizer, *, sft: bool = False, batch_size: int = 1000, threads: int = 1
    ) -> None:
        super().__init__(
            output_folder, tokenizer_name_or_path=str(tokenizer.path), eos_token=None, batch_size=batch_size
        )
        self.tok = tokenizer
        self.sft = sft
        self.threads = threads

    @cached_property
    def token_size(self) -> int:
        return 2 if token_dtype(self.tok.vocab_size) == "uint16" else 4

    def write_tokens(self, data: DocumentsPipeline, filename: str) -> MegatronTokenizedFile:
        tokens = AtomicTokenizedFile(self.output_folder, filename, self.token_size)
        mask = AtomicTokenizedFile(self.output_folder, f"{filename}_mask", 1) if self.sft else None
        try:
            self._write(data, tokens, mask)
        except BaseException:
            for f in (tokens, mask):
                if f is not None:
                    f.discard()
            raise
        for f in (tokens, mask):
            if f is None:
                continue
            if f.sequence_lengths:
                f.close()
            else:
                f.discard()
        return tokens

    def _write(self, data: DocumentsPipeline, tokens: AtomicTokenizedFile, mask: AtomicTokenizedFile | None) -> None:
        eod = self.tok.eod_id
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                if self.sft:
                    prompts = self.tok.encode_batch([d.metadata["prompt"] for d in batch], self.threads)
                    responses = [d.metadata["response"] for d in batch]
                    # The model must learn to stop: a response always ends its turn with <|end|>.
                    responses = [r if r.endswith(END) else r + END for r in responses]
                    answers = self.tok.encode_batch(responses, self.threads)
                    seqs = [p + r + [eod] for p, r in zip(prompts, answers)]
                    mask.write_batch([[0] * len(p) + [1] * (len(r) + 1) for p, r in zip(prompts, answers)])
                    self.stat_update("loss_tokens", value=sum(len(r) + 1 for r in answers))
                else:
                    seqs = self.tok.encode_batch([d.text for d in batch], self.threads)
                    for s in seqs:
                        s.append(eod)
                tokens.write_batch(seqs)
                self.stat_update("tokens", value=sum(len(s) for s in seqs))
                self.stat_update("documents", value=len(seqs))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.write_tokens(data, f"{rank:05d}")
        yield from ()  # the last step of its pipeline: it writes and passes nothing on


# -- the whole shard set -----------------------------------------------------------------------
def shard_prefixes(out_dir: Path, tasks: int) -> tuple[list[str], list[str]]:
    """Token and mask prefixes present in a finished shard set, in rank order."""
    tokens = [f"{r:05d}" for r in range(tasks) if (out_dir / f"{r:05d}.idx").exists()]
    masks = [f"{r:05d}_mask" for r in range(tasks) if (out_dir / f"{r:05d}_mask.idx").exists()]
    return tokens, masks


def idx_sequence_lengths(idx: Path) -> np.ndarray:
    """Document lengths from a ``.idx`` header, without importing torch and Megatron (seconds per process)."""
    with open(idx, "rb") as f:
        header = f.read(34)  # magic (9), version (8), dtype code (1), sequence count (8), document count (8)
        count = int(np.frombuffer(header, dtype="<u8", count=1, offset=18)[0])
        return np.frombuffer(f.read(4 * count), dtype="<i4")


def count_rejects(rejects_dir: Path) -> dict[str, int]:
    """Dropped records by reason, from the rejects files of a run."""
    dropped: dict[str, int] = {}
    for f in sorted(rejects_dir.glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    reason = json.loads(line)["reason"]
                    dropped[reason] = dropped.get(reason, 0) + 1
    return dropped


def _remove_temporaries(out: Path) -> None:
    for f in [*out.glob(".*.tmp.*"), *(out / "rejects").glob(".*.tmp")]:
        f.unlink(missing_ok=True)


def _clear_outputs(out: Path) -> None:
    for f in out.iterdir():
        if f.is_file() and (f.suffix in (".bin", ".idx") or f.name.endswith(".tmp") or f.name == MANIFEST_NAME):
            f.unlink()
    for d in ("logs", "rejects", "events"):
        shutil.rmtree(out / d, ignore_errors=True)
    (out / "config.json").unlink(missing_ok=True)


def build_shards(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    tokenizer: Tokenizer | str | os.PathLike,
    *,
    text_field: str = "text",
    sft: bool = False,
    prompt_field: str = "metadata.prompt",
    response_field: str = "metadata.response",
    messages_field: str = "messages",
    tasks: int = 2,
    workers: int = 2,
    batch_size: int = 1000,
    on_error: str = "drop",
    overwrite: bool = False,
    allow_empty: bool = False,
    progress: bool = False,
    executor: str = "local",
) -> Manifest:
    """Tokenize ``inputs`` into a Megatron shard set at ``out_dir`` and return its manifest.

    Reuses a finished set with the same fingerprint; resumes an unfinished one; refuses to replace
    a finished set made from other inputs unless ``overwrite``. A set that keeps no document is an
    error carrying the drop account (no manifest is written) unless ``allow_empty``.
    """
    from frontload.core.events import RunFolder
    from frontload.corpus.executors import run_pipeline

    cfg = ShardConfig(
        text_field=text_field,
        sft=sft,
        prompt_field=prompt_field,
        response_field=response_field,
        messages_field=messages_field,
        tasks=tasks,
        workers=min(workers, tasks),
        batch_size=batch_size,
        on_error=on_error,
    )
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    out = Path(out_dir)
    in_fp = input_fingerprint(inputs)
    fp = fingerprint("shards", in_fp, tok.fingerprint, cfg.output_fields)

    if (out / MANIFEST_NAME).exists():
        old = Manifest.read(out)
        if old.kind == "shards" and old.fingerprint == fp:
            return old
        if not overwrite:
            raise FrontloadError(
                f"{out}: already holds a finished {old.kind} set made from other inputs or settings "
                f"(fingerprint {old.fingerprint}, this run {fp}); choose another folder or overwrite"
            )
        _clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / "logs" / "frontload_fingerprint"
    if state.exists() and state.read_text().strip() != fp:
        _clear_outputs(out)  # an unfinished run of something else: its completion markers must not count
    (out / "logs").mkdir(parents=True, exist_ok=True)
    state.write_text(fp)

    threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    reader = make_reader(
        inputs, cfg.record_spec(), on_error=cfg.on_error, rejects_dir=out / "rejects", progress=progress
    )
    writer = MegatronShardWriter(str(out), tok, sft=cfg.sft, batch_size=cfg.batch_size, threads=threads)
    try:
        run_pipeline(
            [reader, writer],
            kind=executor,
            tasks=cfg.tasks,
            workers=cfg.workers,
            logging_dir=str(out / "logs"),
            job_name=f"shards-{out.name}",
        )
    except BaseException:
        # When one task fails, the pool terminates the others mid-write; their temporary files are
        # of no use to a rerun (unfinished tasks start over), so none is left behind.
        _remove_temporaries(out)
        raise
    missing = [r for r in range(cfg.tasks) if not (out / "logs" / "completions" / f"{r:05d}").exists()]
    if missing:
        raise FrontloadError(f"{out}: tasks {missing} did not finish; see {out / 'logs' / 'logs'}; rerun to resume")

    manifest = _manifest_for(out, inputs, tok, cfg, in_fp, fp)
    require_records(manifest.account, out, out / "rejects", allow_empty)
    with RunFolder(out, stage="shards", config=manifest.config) as run:
        acc = manifest.account
        run.log("stats", step_name="shards", inputs=acc.inputs, kept=acc.kept, dropped=acc.dropped)
    manifest.write(out)
    return manifest


def _manifest_for(
    out: Path, inputs: Sequence[str | os.PathLike], tok: Tokenizer, cfg: ShardConfig, in_fp: str, fp: str
) -> Manifest:
    prefixes, mask_prefixes = shard_prefixes(out, cfg.tasks)
    documents = tokens = 0
    for prefix in prefixes:
        lengths = idx_sequence_lengths(out / f"{prefix}.idx")
        documents += len(lengths)
        tokens += int(lengths.sum())
    dropped = count_rejects(out / "rejects")
    account = Account(inputs=documents + sum(dropped.values()), kept=documents, dropped=dropped)
    names = [f"{p}{ext}" for p in prefixes + mask_prefixes for ext in (".bin", ".idx")]
    files = {n: {"sha256": sha256_file(out / n), "bytes": (out / n).stat().st_size} for n in sorted(names)}
    counts = {"documents": documents, "tokens": tokens}
    if cfg.sft:
        counts["loss_tokens"] = sum(int(np.fromfile(out / f"{p}.bin", dtype=np.uint8).sum()) for p in mask_prefixes)
    extra: dict[str, Any] = {
        "tokenizer_fingerprint": tok.fingerprint,
        "dtype": token_dtype(tok.vocab_size),
        "prefixes": prefixes,
        "files": files,
        "input_fingerprint": in_fp,
        "sft": cfg.sft,
        "eod_id": tok.eod_id,
        "vocab_size": tok.vocab_size,
        "rejects": sorted(str(p.relative_to(out)) for p in (out / "rejects").glob("*.jsonl")),
    }
    if cfg.sft:
        extra["mask_prefixes"] = mask_prefixes
    config = {**as_dict(cfg), "inputs": [str(p) for p in inputs], "tokenizer": str(tok.path)}
    return Manifest(kind="shards", fingerprint=fp, config=config, counts=counts, account=account, extra=extra)
