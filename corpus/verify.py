"""``frontload corpus verify``: recheck a shard set or a corpus folder against its manifest.

For a shard set (manifest kind ``shards``) it recomputes every listed file's size and sha256,
opens every shard with Megatron-core's own ``IndexedDataset``, checks the index against the
``.bin`` size, the dtype, the document and token counts, that every document ends with EOD and no
id is outside the vocabulary, that SFT masks have the tokens' lengths and hold only 0/1, and
(optionally) that a given tokenizer is the one the set was made with. For a corpus folder (kind
``corpus``) it checks that the drop account balances and that the documents under ``data/`` and
the records under ``rejects/`` match the counts.

Invariant: :func:`verify_folder` never raises for a damaged folder; it returns one message per
problem, each naming the file at fault. An empty list means the folder is sound.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from frontload.core.fingerprint import sha256_file
from frontload.core.manifest import MANIFEST_NAME, Manifest, ManifestError

_ITEMSIZE = {"uint8": 1, "uint16": 2, "int32": 4}


def verify_folder(path: str | os.PathLike, tokenizer: Any = None) -> list[str]:
    """Problems found in a shard set or corpus folder (empty when sound); ``tokenizer`` is optional."""
    folder = Path(path)
    try:
        manifest = Manifest.read(folder)
    except ManifestError as e:
        return [str(e)]
    if manifest.kind == "shards":
        return _verify_shards(folder, manifest, tokenizer)
    if manifest.kind == "corpus":
        return _verify_corpus(folder, manifest)
    return [f"{folder / MANIFEST_NAME}: unknown kind {manifest.kind!r} (expected 'shards' or 'corpus')"]


def _verify_files(folder: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name, want in sorted(files.items()):
        p = folder / name
        if not p.exists():
            problems.append(f"{p}: missing (listed in {MANIFEST_NAME})")
            continue
        size = p.stat().st_size
        if size != want["bytes"]:
            what = "truncated" if size < want["bytes"] else "longer than recorded"
            problems.append(f"{p}: {what}: {size} bytes, {MANIFEST_NAME} says {want['bytes']}")
        elif sha256_file(p) != want["sha256"]:
            problems.append(f"{p}: content changed: sha256 differs from {MANIFEST_NAME}")
    for p in sorted(folder.glob("*.bin")) + sorted(folder.glob("*.idx")):
        if p.name not in files:
            problems.append(f"{p}: not listed in {MANIFEST_NAME} (left over from another run?)")
    return problems


@functools.cache
def _indexed_dataset() -> type:
    with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed": not verify's business
        warnings.simplefilter("ignore", UserWarning)
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    class CheckedIndexedDataset(IndexedDataset):
        """Megatron-core's own reader. Its ``__del__`` assumes ``__init__`` finished, which a damaged
        index never lets it do; Python would then print "Exception ignored in __del__" after our message."""

        def __del__(self) -> None:
            if "index" in self.__dict__ and "bin_reader" in self.__dict__:
                super().__del__()

    return CheckedIndexedDataset


def _open_shard(folder: Path, prefix: str, dtype: str, problems: list[str]):
    idx, bin_ = folder / f"{prefix}.idx", folder / f"{prefix}.bin"
    if not idx.exists() or not bin_.exists():
        return None
    try:
        ds = _indexed_dataset()(str(folder / prefix))
    except Exception as e:  # Megatron asserts and numpy errors alike mean an unreadable index
        problems.append(f"{idx}: Megatron's IndexedDataset cannot read it: {type(e).__name__}: {e}")
        return None
    got = np.dtype(ds.index.dtype).name
    if got != dtype:
        problems.append(f"{idx}: dtype {got}, expected {dtype}")
        return None
    lengths = ds.sequence_lengths.astype(np.int64)
    pointers = ds.index.sequence_pointers.astype(np.int64)
    itemsize = _ITEMSIZE[dtype]
    expected_pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * itemsize if len(lengths) else lengths
    if (lengths < 0).any() or not np.array_equal(pointers, expected_pointers):
        problems.append(f"{idx}: sequence lengths and pointers disagree (edited index?)")
        return None
    docs = ds.document_indices
    if len(docs) != len(lengths) + 1 or docs[0] != 0 or not (np.diff(docs) == 1).all():
        problems.append(f"{idx}: document index is not one sequence per document")
        return None
    size = bin_.stat().st_size
    if size != int(lengths.sum()) * itemsize:
        problems.append(f"{bin_}: {size} bytes, but {idx.name} describes {int(lengths.sum()) * itemsize}")
        return None
    return ds


def _verify_shards(folder: Path, m: Manifest, tokenizer: Any) -> list[str]:
    x = m.extra
    where = folder / MANIFEST_NAME
    missing = [
        k for k in ("files", "prefixes", "dtype", "tokenizer_fingerprint", "eod_id", "vocab_size") if k not in x
    ]
    if missing:
        return [f"{where}: missing fields {missing}"]
    problems = _verify_files(folder, x["files"])
    if tokenizer is not None:
        from frontload.corpus.tokenizer import Tokenizer, load_tokenizer

        tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        if tok.fingerprint != x["tokenizer_fingerprint"]:
            problems.append(
                f"{where}: made with tokenizer {x['tokenizer_fingerprint']}, "
                f"not with {tok.path} (fingerprint {tok.fingerprint})"
            )
    if x["dtype"] not in ("uint16", "int32"):
        problems.append(f"{where}: dtype {x['dtype']!r} is not uint16 or int32")
        return problems
    documents = tokens = 0
    eod, vocab = int(x["eod_id"]), int(x["vocab_size"])
    masks = x.get("mask_prefixes") or []
    if x.get("sft") and len(masks) != len(x["prefixes"]):
        problems.append(
            f"{where}: an SFT set needs one mask per shard ({len(x['prefixes'])} shards, {len(masks)} masks)"
        )
    for i, prefix in enumerate(x["prefixes"]):
        ds = _open_shard(folder, prefix, x["dtype"], problems)
        if ds is None:
            continue
        lengths = ds.sequence_lengths.astype(np.int64)
        documents += len(lengths)
        tokens += int(lengths.sum())
        data = np.fromfile(folder / f"{prefix}.bin", dtype=x["dtype"])
        if len(data):
            if int(data.max()) >= vocab:
                problems.append(
                    f"{folder / prefix}.bin: token id {int(data.max())} is outside the vocabulary ({vocab})"
                )
            ends = np.cumsum(lengths) - 1
            bad = np.flatnonzero(data[ends] != eod) if (lengths > 0).all() else [0]
            if len(bad):
                problems.append(f"{folder / prefix}.bin: document {int(bad[0])} does not end with EOD ({eod})")
        if x.get("sft") and i < len(masks):
            mds = _open_shard(folder, masks[i], "uint8", problems)
            if mds is None:
                continue
            if not np.array_equal(mds.sequence_lengths, ds.sequence_lengths):
                problems.append(f"{folder / masks[i]}.idx: mask lengths differ from {prefix}.idx")
            mask = np.fromfile(folder / f"{masks[i]}.bin", dtype=np.uint8)
            if mask.size and int(mask.max()) > 1:
                problems.append(f"{folder / masks[i]}.bin: mask values other than 0 and 1")
    if not problems:
        want = m.counts
        if want.get("documents") != documents or want.get("tokens") != tokens:
            problems.append(
                f"{where}: counts say {want.get('documents')} documents / {want.get('tokens')} tokens, "
                f"shards hold {documents} / {tokens}"
            )
    problems += _verify_account(folder, m, documents if not problems else None)
    return problems


def _count_records(files: list[Path], problems: list[str]) -> int:
    import pyarrow as pa

    n = 0
    for f in files:
        try:
            if f.name.endswith(".parquet"):
                import pyarrow.parquet as pq

                n += pq.ParquetFile(f).metadata.num_rows
            else:
                from datatrove.io import get_datafolder

                with get_datafolder(str(f.parent)).open(f.name, "rb", compression="infer") as fh:
                    n += sum(1 for line in fh if line.strip())
        except (pa.ArrowException, OSError, EOFError) as e:  # verify reports damage, it never raises
            problems.append(f"{f}: unreadable (damaged or truncated?): {e}")
    return n


def _data_files(folder: Path) -> list[Path]:
    from frontload.corpus.readers import folder_files

    return folder_files(folder)


def _verify_account(folder: Path, m: Manifest, kept: int | None) -> list[str]:
    where = folder / MANIFEST_NAME
    acc = m.account
    if acc is None:
        return [f"{where}: no drop account"]
    problems = []
    if not acc.balanced:
        problems.append(f"{where}: drop account does not balance: {acc.to_dict()}")
    if kept is not None and acc.kept != kept:
        problems.append(f"{where}: account keeps {acc.kept} records, the data holds {kept}")
    rejects_dir = folder / "rejects"
    rejects = _data_files(rejects_dir)
    for name in m.extra.get("rejects") if isinstance(m.extra.get("rejects"), list) else []:
        if not (folder / name).exists():
            problems.append(f"{folder / name}: missing (listed in {MANIFEST_NAME}; deleted?)")
    # Every maker that writes rejects says so (shard sets always; corpora with a "rejects" entry or
    # count): then rejects/ must hold the drops, and deleting it is damage, not a clean folder.
    # Problem generators count skipped candidates that were never records, so they write none.
    expected = m.counts.get("rejects") if "rejects" in m.counts else sum(acc.dropped.values())
    declared = m.kind == "shards" or "rejects" in m.extra or "rejects" in m.counts
    if rejects or (declared and expected):
        n = _count_records(rejects, problems)
        if n != expected:
            what = "missing" if not rejects_dir.exists() else f"{n} rejected records"
            problems.append(f"{rejects_dir}: {what}, but the account drops {expected} (deleted or edited?)")
    return problems


def _verify_corpus(folder: Path, m: Manifest) -> list[str]:
    data = _data_files(folder / "data")
    if not data:
        return [f"{folder / 'data'}: no JSONL or Parquet documents"]
    unreadable: list[str] = []
    kept = _count_records(data, unreadable)
    if unreadable:
        return unreadable
    problems = _verify_account(folder, m, kept)
    if "documents" in m.counts and m.counts["documents"] != kept:
        problems.append(f"{folder / MANIFEST_NAME}: counts say {m.counts['documents']} documents, data/ holds {kept}")
    return problems
