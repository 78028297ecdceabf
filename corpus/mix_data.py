"""The training data of one phase, built from its mix plan with Megatron-core's dataset classes.

:func:`build_phase_dataset` builds a :class:`PhaseDataset` with ``BlendedMegatronDatasetBuilder``
(``GPTDataset`` per shard prefix, ``BlendedDataset`` per stage) and concatenates the stages; the
invariants it keeps are listed in :mod:`frontload.corpus.mix_plan`. Kept apart from the plan so that
planning a mix (and importing the schedule types) does not import Megatron. The classes are small
extensions of Megatron-core's own:

* :class:`StreamGPTDataset` is a ``GPTDataset`` whose length is a shard prefix's total over a
  whole phase (the *stream*), read from a per-stage offset; its document order, sample index and
  shuffle therefore depend only on the plan and the seed, and all stages share one index cache.
* :class:`MaskedIndexedDataset` reads an SFT prefix's tokens and its ``_mask`` loss mask as one
  int64 stream (``token | mask << 32``), so ``GPTDataset``'s own document/offset query slices
  both identically.

Classes are module-level so datasets pickle into ``DataLoader`` workers.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from frontload.corpus.mix import MixError
from frontload.corpus.mix_plan import MixPlan, PhasePlan, _prefix_blend, read_shard_set

MASK_SHIFT = 32
TOKEN_BITS = (1 << MASK_SHIFT) - 1


class ShardTokenizer:
    """The little a ``GPTDatasetConfig`` needs from a tokenizer: eod, vocab size, a cache identity."""

    def __init__(self, eod: int, vocab_size: int, tokenizer_fingerprint: str) -> None:
        self.eod = eod
        self.vocab_size = vocab_size
        self.unique_identifiers = {"class": "frontload.corpus.tokenizer", "fingerprint": tokenizer_fingerprint}


class MaskedIndexedDataset:
    """Tokens and their loss mask read as one: :meth:`get` packs ``token | mask << 32`` into int64."""

    def __init__(self, tokens: IndexedDataset, mask: IndexedDataset, path_prefix: str) -> None:
        self.tokens = tokens
        self.mask = mask
        self.path_prefix = path_prefix
        self.sequence_lengths = tokens.sequence_lengths
        self.document_indices = tokens.document_indices

    def __len__(self) -> int:
        return len(self.tokens)

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Document ``idx`` from ``offset`` for ``length`` tokens, tokens and mask packed together."""
        t = self.tokens.get(idx, offset=offset, length=length).astype(np.int64)
        m = self.mask.get(idx, offset=offset, length=length).astype(np.int64)
        return t | (m << MASK_SHIFT)


@dataclass
class StreamDatasetConfig(GPTDatasetConfig):
    """``GPTDatasetConfig`` plus each prefix's stream length and this stage's offset into it."""

    stream_samples: dict = field(default_factory=dict)  # prefix path -> samples of its stream over the phase
    stream_offsets: dict = field(default_factory=dict)  # prefix path -> first stream sample of this stage
    mask_prefixes: dict = field(default_factory=dict)  # prefix path -> its _mask prefix (SFT shard sets)
    identity: str = ""  # the phase plan's fingerprint: shard contents, stages, seq_len and seed


class StreamGPTDataset(GPTDataset):
    """A ``GPTDataset`` over a prefix's whole-phase stream, exposed from this stage's offset on.

    Megatron's builder sizes a mid-level dataset from the stage alone; here the length is the
    prefix's total over the phase instead, so the document order and shuffle are the same in every
    stage (one cache) and each stage continues where the previous one stopped.
    """

    def __init__(self, indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config):
        # num_samples (the builder's stage-only request) is replaced by the whole stream's length.
        self.offset = int(config.stream_offsets[dataset_path])
        self.masked = isinstance(indexed_dataset, MaskedIndexedDataset)
        stream = int(config.stream_samples[dataset_path])
        super().__init__(indexed_dataset, dataset_path, indexed_indices, stream, index_split, config)

    @staticmethod
    def _key_config_attributes() -> list[str]:
        # Megatron keys its index cache on the prefix path; a shard set rebuilt in place with other
        # documents must not hit the old index, so the plan's fingerprint joins the key.
        return [*GPTDataset._key_config_attributes(), "identity"]

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: StreamDatasetConfig):
        tokens = IndexedDataset(dataset_path, mmap=config.mmap_bin_files)
        mask_prefix = config.mask_prefixes.get(dataset_path)
        if mask_prefix is None:
            return tokens
        mask = IndexedDataset(mask_prefix, mmap=config.mmap_bin_files)
        if not np.array_equal(mask.sequence_lengths, tokens.sequence_lengths):
            raise MixError(f"{mask_prefix}.idx: loss-mask document lengths differ from {dataset_path}.idx")
        return MaskedIndexedDataset(tokens, mask, dataset_path)

    def _build_document_sample_shuffle_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Megatron shuffles documents across all epochs at once (and samples across the whole index),
        # so the first samples of a stream depend on how long the stream is, that is on the stages
        # after this one. Shuffling each epoch on its own, with permutations drawn in epoch order,
        # makes the stream's first samples depend only on the seed: arms that agree on their early
        # stages read the same samples there, whatever their later stages do (shared pretraining
        # prefixes rely on it). One epoch more than the stream reads is indexed, so every epoch's
        # block of samples is whole and its permutation never depends on where the stream ends.
        from megatron.core.datasets import helpers

        cache = Path(self.config.path_to_cache) if self.config.path_to_cache else None
        base = f"{self.unique_description_hash}-{type(self).__name__}-{self.index_split.name}"
        files = (
            [cache / f"{base}-{a}.npy" for a in ("document_index", "sample_index", "shuffle_index")] if cache else []
        )
        if files and all(f.exists() for f in files):
            return tuple(np.load(f, mmap_mode="r") for f in files)

        seq = self.config.sequence_length
        extra = int(self.config.add_extra_token_to_sequence)
        per_epoch = self._get_num_tokens_per_epoch()
        epochs = -(-(self.num_samples * seq + extra) // per_epoch) + 1
        doc_rng = np.random.RandomState(self.config.random_seed)
        document_index = np.concatenate([doc_rng.permutation(self.indices) for _ in range(epochs)]).astype(np.int32)
        lengths = np.ascontiguousarray(self.dataset.sequence_lengths, dtype=np.int32)
        sample_index = helpers.build_sample_idx(lengths, document_index, seq, epochs, per_epoch, True, extra)
        total = sample_index.shape[0] - 1
        # Sample i starts at token i * seq; its block is the epoch that token falls in.
        bounds = [min(e * per_epoch // seq, total) for e in range(epochs)] + [total]
        shuffle_rng = np.random.RandomState(self.config.random_seed + 1)
        shuffle_index = np.concatenate(
            [lo + shuffle_rng.permutation(hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:])]
        ).astype(np.int64)
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            for f, arr in zip(files, (document_index, sample_index, shuffle_index)):
                # Written under a temporary name and renamed: a concurrent build never reads half a file.
                tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
                os.replace(tmp, f)
        return document_index, sample_index, shuffle_index

    def __len__(self) -> int:
        return super().__len__() - self.offset

    def __getitem__(self, idx):
        k = idx + self.offset
        if not self.masked:
            return super().__getitem__(k)
        packed, _ = self._query_document_sample_shuffle_indices(k)
        packed = torch.from_numpy(packed)
        pad = packed < 0  # GPTDataset pads with a negative id past a final partial sequence
        text = torch.where(pad, 0, packed & TOKEN_BITS)
        mask = torch.where(pad, 0, packed >> MASK_SHIFT).float()
        return {
            "tokens": text[:-1].contiguous(),
            "labels": text[1:].contiguous(),
            # The loss at position i predicts token i+1, so it takes that token's mask.
            "loss_mask": mask[1:].contiguous(),
            "position_ids": torch.arange(self.config.sequence_length, dtype=torch.long),
        }


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Megatron's ``BlendedDataset`` asks torch.distributed for the rank when it builds a cache;
    outside a distributed run, give it a one-process gloo group for the duration of the build."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Datasets (Megatron-core)
# --------------------------------------------------------------------------------------------


class PhaseDataset:
    """The training samples of one phase: stage datasets (Megatron ``BlendedDataset``) in order.

    ``ds[k]`` is global sample ``k`` of the phase: ``tokens``, ``labels``, ``loss_mask``,
    ``position_ids`` (tensors of seq_len), ``source`` (shard set name) and ``stage`` (index).
    """

    def __init__(self, plan: PhasePlan, stages: list[Any], stage_sources: list[list[str]]) -> None:
        self.plan = plan
        self.stages = stages
        self._stage_sources = stage_sources
        self._starts = [s.start_sample for s in plan.stages]

    @property
    def fingerprint(self) -> str:
        """The phase plan's fingerprint (what checkpoints record as mix_plan_fingerprint)."""
        return self.plan.fingerprint

    @property
    def seq_len(self) -> int:
        return self.plan.seq_len

    def __len__(self) -> int:
        return self.plan.samples

    def stage_of(self, k: int) -> int:
        """Index of the stage that holds global sample ``k``."""
        return bisect_right(self._starts, k) - 1

    def consumed_by_source(self, k: int) -> dict[str, int]:
        """Samples per source among global samples ``[0, k)``, read from the blending indices
        (what a run resumed at ``k`` has already consumed), without touching the data."""
        out: dict[str, int] = {}
        for s, st in enumerate(self.plan.stages):
            local = min(max(k - st.start_sample, 0), st.samples)
            if local == 0:
                continue
            counts = np.bincount(
                np.asarray(self.stages[s].dataset_index[:local]), minlength=len(self._stage_sources[s])
            )
            for source, c in zip(self._stage_sources[s], counts.tolist()):
                out[source] = out.get(source, 0) + c
        return dict(sorted(out.items()))

    def __getitem__(self, k: int) -> dict[str, Any]:
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"sample {k} is outside the phase's {len(self)} samples")
        s = self.stage_of(k)
        item = self.stages[s][k - self._starts[s]]
        dataset_id = int(item.pop("dataset_id"))
        item.pop("attention_mask", None)
        item["loss_mask"] = item["loss_mask"].float()
        item["source"] = self._stage_sources[s][dataset_id]
        item["stage"] = s
        return item


def build_phase_dataset(
    plan: MixPlan | PhasePlan,
    shard_dirs: Mapping[str, str | os.PathLike],
    cache_dir: str | os.PathLike,
    *,
    phase: str | None = None,
) -> PhaseDataset:
    """Build the phase's datasets with Megatron-core's ``BlendedMegatronDatasetBuilder``.

    Index caches go to ``cache_dir``; a second build with the same plan loads them. The shard
    sets must be the ones planned (same manifest fingerprints), or the error names the source.
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    from frontload.core.progress import progress_bar

    ph = plan.phase(phase) if isinstance(plan, MixPlan) else plan
    prefix_path: dict[tuple[str, int], str] = {}
    mask_prefixes: dict[str, str] = {}
    stream_samples: dict[str, int] = {}
    for source, planned in ph.sources.items():
        if source not in shard_dirs:
            raise MixError(f"{ph.phase}: source {source!r} has no shard set (shard sets given: {sorted(shard_dirs)})")
        folder = Path(shard_dirs[source])
        info = read_shard_set(source, folder, where=ph.phase)
        if info.fingerprint != planned.fingerprint or info.prefix_tokens != planned.prefix_tokens:
            raise MixError(
                f"{ph.phase}: source {source!r}: shard set {folder} changed since the plan was made "
                f"(fingerprint {info.fingerprint}, planned {planned.fingerprint}); plan again"
            )
        for j, rel in enumerate(info.prefixes):
            path = str((folder / rel).resolve())
            prefix_path[(source, j)] = path
            stream_samples[path] = ph.stream_samples[source][j]
            if info.sft:
                mask_prefixes[path] = str((folder / info.mask_prefixes[j]).resolve())
    first = next(iter(ph.sources.values()))
    tokenizer = ShardTokenizer(first.eod_id, first.vocab_size, first.tokenizer_fingerprint)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)

    built, stage_sources = [], []
    with process_group():
        for st in progress_bar(ph.stages, desc=f"{ph.phase} mix datasets", unit="stage", disable=len(ph.stages) < 2):
            pairs, weights = _prefix_blend({s: sp.weight for s, sp in st.sources.items()}, ph.sources)
            paths = [prefix_path[p] for p in pairs]
            owners = [source for source, _ in pairs]
            offsets = {prefix_path[(s, j)]: st.sources[s].stream_offset[j] for s, j in pairs}
            planned = [st.sources[s].prefix_samples[j] for s, j in pairs]
            config = StreamDatasetConfig(
                random_seed=ph.seed,
                sequence_length=ph.seq_len,
                blend=(paths, weights),
                split="1,0,0",
                path_to_cache=str(cache_dir),
                tokenizer=tokenizer,
                reset_position_ids=False,
                reset_attention_mask=False,
                eod_mask_loss=False,
                create_attention_mask=False,
                mid_level_dataset_surplus=0.0,
                stream_samples=stream_samples,
                stream_offsets=offsets,
                mask_prefixes=mask_prefixes,
                identity=ph.fingerprint,
            )
            dataset = BlendedMegatronDatasetBuilder(
                StreamGPTDataset, [st.samples, 0, 0], lambda: True, config
            ).build()[0]
            got = np.bincount(np.asarray(dataset.dataset_index[: st.samples]), minlength=len(paths))
            if got.tolist() != planned or len(dataset) < st.samples:
                raise MixError(
                    f"{ph.phase}[{st.index}]: Megatron's blended index draws {got.tolist()} samples per prefix, "
                    f"the plan {planned}; plan again with this megatron-core"
                )
            built.append(dataset)
            stage_sources.append(owners)
    return PhaseDataset(ph, built, stage_sources)
