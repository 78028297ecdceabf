"""Tiny contract-3 shard sets for the mix tests, written with Megatron's ``IndexedDatasetBuilder``.

Each source draws its token ids from its own range, so a sample's tokens tell which source it
came from; SFT sets put prompt and response tokens in separate ranges and mark responses in the
``_mask`` files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from frontload.core.fingerprint import sha256_file
from frontload.core.manifest import Manifest

EOD = 1
VOCAB = 4096


def write_shard_set(
    folder: Path,
    docs: list[np.ndarray],
    *,
    masks: list[np.ndarray] | None = None,
    files: int = 1,
    tokenizer_fingerprint: str = "tok-fp",
    fingerprint: str | None = None,
) -> Path:
    """Write ``docs`` (each ending in EOD) into ``files`` prefixes plus a shard manifest."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    folder.mkdir(parents=True, exist_ok=True)
    prefixes, mask_prefixes, sums = [], [], {}
    for f, part in enumerate(np.array_split(np.arange(len(docs)), files)):
        name = f"{f:05d}"
        b = IndexedDatasetBuilder(str(folder / f"{name}.bin"), dtype=np.uint16)
        for i in part:
            b.add_document(torch.from_numpy(docs[i].astype(np.int64)), [len(docs[i])])
        b.finalize(str(folder / f"{name}.idx"))
        prefixes.append(name)
        if masks is not None:
            mb = IndexedDatasetBuilder(str(folder / f"{name}_mask.bin"), dtype=np.uint8)
            for i in part:
                mb.add_document(torch.from_numpy(masks[i].astype(np.int64)), [len(masks[i])])
            mb.finalize(str(folder / f"{name}_mask.idx"))
            mask_prefixes.append(f"{name}_mask")
    for p in sorted(folder.glob("*.bin")) + sorted(folder.glob("*.idx")):
        sums[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    Manifest(
        kind="shards",
        fingerprint=fingerprint or f"shards-{folder.name}-{len(docs)}",
        counts={"documents": len(docs), "tokens": int(sum(len(d) for d in docs))},
        extra={
            "tokenizer_fingerprint": tokenizer_fingerprint,
            "dtype": "uint16",
            "prefixes": prefixes,
            "mask_prefixes": mask_prefixes if masks is not None else [],
            "files": sums,
            "input_fingerprint": "in",
            "sft": masks is not None,
            "eod_id": EOD,
            "vocab_size": VOCAB,
        },
    ).write(folder)
    return folder


def text_docs(lo: int, hi: int, n: int, seed: int, min_len: int = 5, max_len: int = 60) -> list[np.ndarray]:
    """``n`` documents of ids in [lo, hi), each ending with EOD."""
    rng = np.random.default_rng(seed)
    return [np.append(rng.integers(lo, hi, int(rng.integers(min_len, max_len))), EOD) for _ in range(n)]


PROMPT = (300, 400)
RESPONSE = (400, 500)


def sft_docs(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Chat examples: prompt ids (mask 0), then response ids and EOD (mask 1)."""
    rng = np.random.default_rng(seed)
    docs, masks = [], []
    for _ in range(n):
        p = rng.integers(*PROMPT, int(rng.integers(3, 20)))
        r = rng.integers(*RESPONSE, int(rng.integers(3, 30)))
        docs.append(np.concatenate([p, r, [EOD]]))
        masks.append(np.concatenate([np.zeros(len(p)), np.ones(len(r) + 1)]))
    return docs, masks
