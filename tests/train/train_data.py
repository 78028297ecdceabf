"""Tiny contract-3 shard sets for the trainer tests, tokenized with the session's tiny tokenizer.

``web`` is English from ``pydoc_data.topics``; ``reasoning`` is chat-rendered addition problems
with worked answers; ``sft`` holds the same kind of examples with a loss mask on the response only.
Shards are written with Megatron's ``IndexedDatasetBuilder`` plus a shard manifest, as the corpus
stage writes them.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from frontload.core.chat import render_example
from frontload.core.fingerprint import sha256_file
from frontload.core.manifest import Manifest


def write_shards(folder: Path, tokenizer, docs: list[list[int]], masks: list[list[int]] | None = None) -> Path:
    """One prefix ``00000`` (plus ``00000_mask`` for SFT) and the manifest; each doc ends with EOD."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    folder.mkdir(parents=True, exist_ok=True)
    b = IndexedDatasetBuilder(str(folder / "00000.bin"), dtype=np.uint16)
    for d in docs:
        b.add_document(torch.tensor(d, dtype=torch.int64), [len(d)])
    b.finalize(str(folder / "00000.idx"))
    if masks is not None:
        mb = IndexedDatasetBuilder(str(folder / "00000_mask.bin"), dtype=np.uint8)
        for m in masks:
            mb.add_document(torch.tensor(m, dtype=torch.int64), [len(m)])
        mb.finalize(str(folder / "00000_mask.idx"))
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(folder.glob("*.*"))}
    Manifest(
        kind="shards",
        fingerprint=f"{folder.name}-{sha256_file(folder / '00000.bin')[:12]}",
        counts={"documents": len(docs), "tokens": sum(len(d) for d in docs)},
        extra={
            "tokenizer_fingerprint": tokenizer.fingerprint,
            "dtype": "uint16",
            "prefixes": ["00000"],
            "mask_prefixes": ["00000_mask"] if masks is not None else [],
            "files": files,
            "input_fingerprint": "test",
            "sft": masks is not None,
            "eod_id": tokenizer.eod_id,
            "vocab_size": tokenizer.vocab_size,
        },
    ).write(folder)
    return folder


def addition_examples(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs of two-digit additions with a one-line worked trace."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 49), rng.randint(10, 49)
        out.append(render_example(f"What is {a} + {b}?", f"{a} + {b} = {a + b}", str(a + b)))
    return out


def web_shards(folder: Path, tokenizer, max_docs: int = 200) -> Path:
    from pydoc_data.topics import topics

    docs = [tokenizer.encode(topics[k])[:400] + [tokenizer.eod_id] for k in sorted(topics)[:max_docs]]
    return write_shards(folder, tokenizer, docs)


def reasoning_shards(folder: Path, tokenizer, n: int = 300, seed: int = 0) -> Path:
    docs = [tokenizer.encode(p + r) + [tokenizer.eod_id] for p, r in addition_examples(n, seed)]
    return write_shards(folder, tokenizer, docs)


def sft_shards(folder: Path, tokenizer, n: int = 200, seed: int = 1) -> Path:
    docs, masks = [], []
    for p, r in addition_examples(n, seed):
        pi, ri = tokenizer.encode(p), tokenizer.encode(r) + [tokenizer.eod_id]
        docs.append(pi + ri)
        masks.append([0] * len(pi) + [1] * len(ri))
    return write_shards(folder, tokenizer, docs, masks)


def write_config(path, run_dir, shard_sets, tokenizer, model_config):
    """A pretraining TOML config over the web and reasoning shard sets (for the CLI tests)."""
    path.write_text(
        f"""
run_dir = "{run_dir}"
tokenizer = "{tokenizer.path}"
global_batch = 8
micro_batch = 2
progress = false

[shards]
web = "{shard_sets["web"]}"
reasoning = "{shard_sets["reasoning"]}"

[model]
layers = 2
hidden = 64
heads = 2
seq_len = {model_config.seq_len}
vocab_size = {model_config.vocab_size}

[optim]
lr = 3e-3
warmup_steps = 2

[[mix.pretrain]]
samples = 40
blend = {{ web = 0.5, reasoning = 0.5 }}
"""
    )
    return path
