"""Benchmark the mix stage: building a phase's blended datasets cold and from cache, and the cost of
blending when iterating.

Workload: three synthetic shard sets (random token ids, document lengths 20-600, uint16) in the
proportions 50/30/20 of their tokens, and a two-stage pretraining schedule (stage 0: the first
source alone, 40% of the samples; stage 1: all three at 0.5/0.3/0.2). Measured in one run:

* plan: ``plan_mix`` (reads manifests and ``.idx`` files, runs Megatron's blending index);
* build cold: ``build_phase_dataset`` into an empty cache directory (Megatron builds and saves
  every GPTDataset/BlendedDataset index), and build warm: the same call again (loads the caches);
* iteration, samples/s over the same number of consecutive samples (best of 5 interleaved passes)
  for (a) the baseline, one plain Megatron ``GPTDataset`` on one prefix (its index loaded from the
  cache, memory-mapped, like ours), (b) stage 1's ``BlendedDataset`` alone, (c) our ``PhaseDataset``
  (adds source/stage labels and the stage lookup).

Default: 1M samples of 128 tokens (a minute or two on two cores). ``--full``: 10M samples of 128
tokens over 3 x 100M tokens of shards (web is read ~6 epochs, the others ~2.6).

    .venv/bin/python benchmarks/mix.py            # small default
    .venv/bin/python benchmarks/mix.py --full     # >= 10M samples
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def write_source(folder: Path, tokens: int, seed: int, vocab: int = 32000, files: int = 2) -> Path:
    """A contract-3 shard set of ``tokens`` random token ids in ``files`` prefixes."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from frontload.core.fingerprint import sha256_file
    from frontload.core.manifest import Manifest

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < tokens:
        lengths.extend(rng.integers(20, 600, 10_000).tolist())
    lengths = np.array(lengths)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), tokens)) + 1]
    lengths[-1] -= int(lengths.sum()) - tokens
    flat = rng.integers(2, vocab, int(lengths.sum()), dtype=np.uint16)
    flat[np.cumsum(lengths) - 1] = 1  # EOD closes each document
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    prefixes = []
    for f, part in enumerate(np.array_split(np.arange(len(lengths)), files)):
        name = f"{f:05d}"
        b = IndexedDatasetBuilder(str(folder / f"{name}.bin"), dtype=np.uint16)
        for i in part:
            b.add_document(torch.from_numpy(flat[bounds[i] : bounds[i + 1]].astype(np.int64)), [int(lengths[i])])
        b.finalize(str(folder / f"{name}.idx"))
        prefixes.append(name)
    Manifest(
        kind="shards",
        fingerprint=f"bench-{seed}-{tokens}",
        counts={"documents": len(lengths), "tokens": int(lengths.sum())},
        extra={
            "tokenizer_fingerprint": "bench-tokenizer",
            "dtype": "uint16",
            "prefixes": prefixes,
            "mask_prefixes": [],
            "files": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in folder.glob("*.*")},
            "input_fingerprint": "bench",
            "sft": False,
            "eod_id": 1,
            "vocab_size": vocab,
        },
    ).write(folder)
    return folder


def samples_per_s(dataset, n: int, start: int = 0) -> float:
    t = time.perf_counter()
    for k in range(start, start + n):
        dataset[k]
    return n / (time.perf_counter() - t)


def best_rates(datasets: dict, n: int, rounds: int = 5) -> dict:
    """Best samples/s of each dataset over ``rounds`` interleaved passes over different samples
    (the machine is shared, so the best pass is the least disturbed one)."""
    best = dict.fromkeys(datasets, 0.0)
    for r in range(rounds):
        for name, ds in datasets.items():
            best[name] = max(best[name], samples_per_s(ds, n, start=r * n))
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="10M samples over 3 x 100M tokens of shards")
    parser.add_argument("--samples", type=int, help="total samples of the phase (overrides the preset)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sample")
    parser.add_argument(
        "--iterate", type=int, default=10_000, help="consecutive samples per timed pass (5 passes, best kept)"
    )
    parser.add_argument("--workdir", type=Path, help="where to write shards and caches (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)

    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    from frontload.corpus.mix import MixSchedule, MixStage
    from frontload.corpus.mix_data import ShardTokenizer, build_phase_dataset
    from frontload.corpus.mix_plan import plan_mix

    samples = args.samples or (10_000_000 if args.full else 1_000_000)
    source_tokens = 100_000_000 if args.full else 40_000_000
    work = args.workdir or Path(tempfile.mkdtemp(prefix="frontload-mix-bench-"))
    shares = {"web": 0.5, "reasoning": 0.3, "code": 0.2}
    t = time.perf_counter()
    dirs = {
        name: write_source(work / "shards" / name, int(source_tokens * 3 * share), seed=i)
        for i, (name, share) in enumerate(shares.items())
    }
    t_write = time.perf_counter() - t

    schedule = MixSchedule(
        pretrain=[
            MixStage(samples=int(samples * 0.4), blend={"web": 1.0}),
            MixStage(samples=samples - int(samples * 0.4), blend=shares),
        ],
        repeat_caps={name: 64.0 for name in shares},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        plan = plan_mix(schedule, dirs, seq_len=args.seq_len, seed=1234)
        t_plan = time.perf_counter() - t
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    t = time.perf_counter()
    build_phase_dataset(plan, dirs, cache)
    t_cold = time.perf_counter() - t
    t = time.perf_counter()
    phase = build_phase_dataset(plan, dirs, cache)
    t_warm = time.perf_counter() - t

    # Baseline: one plain Megatron GPTDataset over one prefix, no blending and no stream offset.
    prefix = str((dirs["web"] / "00000").resolve())
    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=args.seq_len,
        blend=([prefix], None),
        split="1,0,0",
        path_to_cache=str(work / "cache-baseline"),
        tokenizer=ShardTokenizer(1, 32000, "bench-tokenizer"),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    low = IndexedDataset(prefix)
    # Sized like stage 1, so its index covers as many epochs of its prefix as the blend needs.
    args_single = (low, prefix, np.arange(len(low), dtype=np.int32), len(phase.stages[1]), Split.train, config)
    GPTDataset(*args_single)
    # Built again, it loads its index from the cache (memory-mapped), as the phase's datasets did.
    single = GPTDataset(*args_single)
    n = min(args.iterate, len(single) // 5, len(stage1 := phase.stages[1]) // 5)
    start1 = plan.phase("pretrain").stages[1].start_sample

    class _Shifted:  # PhaseDataset from stage 1's first sample, so all three read blended samples
        def __getitem__(self, k):
            return phase[start1 + k]

    rates = best_rates({"single": single, "blended": stage1, "phase": _Shifted()}, n)
    rate_single, rate_blended, rate_phase = rates["single"], rates["blended"], rates["phase"]
    result = {
        "samples": samples,
        "seq_len": args.seq_len,
        "sources": {k: plan.phase("pretrain").sources[k].tokens for k in shares},
        "write_shards_s": round(t_write, 2),
        "plan_s": round(t_plan, 3),
        "build_cold_s": round(t_cold, 3),
        "build_warm_s": round(t_warm, 3),
        "cold_over_warm": round(t_cold / t_warm, 1),
        "iterate_samples": n,
        "gptdataset_samples_per_s": round(rate_single),
        "blended_samples_per_s": round(rate_blended),
        "phase_samples_per_s": round(rate_phase),
        "blended_over_gptdataset": round(rate_blended / rate_single, 3),
        "phase_over_gptdataset": round(rate_phase / rate_single, 3),
    }
    print(plan.format_table())
    print()
    print(
        f"shards written in {t_write:.1f} s: " + ", ".join(f"{k} {v:,} tokens" for k, v in result["sources"].items())
    )
    print(f"plan_mix                           {t_plan:8.3f} s")
    print(f"build_phase_dataset, cold cache    {t_cold:8.3f} s")
    print(f"build_phase_dataset, warm cache    {t_warm:8.3f} s   (cold / warm = {t_cold / t_warm:.1f}x)")
    print(f"iterate {n:,} samples:")
    print(f"  baseline: one Megatron GPTDataset  {rate_single:10,.0f} samples/s   1.000")
    print(f"  stage BlendedDataset (3 sources)   {rate_blended:10,.0f} samples/s   {rate_blended / rate_single:.3f}")
    print(f"  PhaseDataset (labels, stage map)   {rate_phase:10,.0f} samples/s   {rate_phase / rate_single:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
