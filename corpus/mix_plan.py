"""Mix plans: a schedule's exact numbers, per phase, stage and source, before anything trains.

:func:`plan_mix` turns a :class:`~frontload.corpus.mix.MixSchedule` into
a :class:`MixPlan` with exact numbers taken from the shard manifests and ``.idx`` files: per stage
and source the samples, tokens, share and repeats (epochs). :func:`frontload.corpus.mix_data.build_phase_dataset`
builds the training data of one phase from the plan with Megatron-core's ``BlendedMegatronDatasetBuilder``
(``GPTDataset`` per shard prefix, ``BlendedDataset`` per stage) and concatenates the stages.

Invariants:

* Per stage, the sample counts per source are the ones Megatron's own blending index realises:
  the plan runs Megatron's ``build_blending_indices`` on the same weights, and the build checks
  the built index against the plan, so the plan printed before training is what training sees.
* Each shard prefix is read as one **stream** per phase: a single ``GPTDataset`` whose length is
  the prefix's total over all stages of the phase (so its document order and shuffle are fixed by
  the plan and the seed alone), and stage *j* reads that stream from the sample where stage *j-1*
  stopped. A source used in several stages therefore continues where it left off; it repeats a
  document only after a whole epoch, never because a new stage restarted its order.
* Resuming at global sample *k* is indexing at *k*. Megatron's usual pitfall, changing the blend
  on resume and rebuilding one blended dataset from the resumed step (which silently loses or
  repeats samples), cannot happen: every stage's dataset is sized from the plan up front, its
  place in the global order is fixed, and nothing depends on when the process started.
* The same plan and seed give the same samples, bit for bit; index caches live in ``cache_dir``
  (Megatron's ``path_to_cache``) and a second build loads them instead of rebuilding.
* SFT shard sets (manifest ``sft: true``) take the loss mask from their ``_mask`` indexed datasets,
  read through the very same document/offset indices as the tokens, so loss falls only on the
  tokens the shard builder marked (the responses).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frontload.core.config import as_dict
from frontload.core.fingerprint import atomic_write_json, fingerprint
from frontload.core.manifest import Manifest, ManifestError
from frontload.core.phases import PHASES
from frontload.corpus.mix import MixError, MixSchedule, MixStage, MixWarning

PLAN_VERSION = 1


# --------------------------------------------------------------------------------------------
# Shard sets (contract 3) as the plan sees them
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ShardSetInfo:
    """What the plan needs from one shard set: its manifest facts and per-prefix token counts."""

    name: str
    fingerprint: str
    tokenizer_fingerprint: str
    sft: bool
    tokens: int
    documents: int
    eod_id: int
    vocab_size: int
    prefixes: list[str]  # relative to the shard set folder
    mask_prefixes: list[str]
    prefix_tokens: list[int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _idx_tokens(prefix: Path) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    # Sum while the dataset is alive: its sequence_lengths view dies with the mmap.
    ds = IndexedDataset(str(prefix), mmap=True)
    return int(ds.sequence_lengths.sum(dtype=np.int64))


def read_shard_set(name: str, folder: str | os.PathLike, *, where: str = "") -> ShardSetInfo:
    """Read a shard set's manifest and ``.idx`` files; errors name ``where`` (phase/stage), source and file."""
    folder = Path(folder)
    at = f"{where}: source {name!r}" if where else f"source {name!r}"
    try:
        m = Manifest.read(folder, kind="shards")
    except ManifestError as e:
        raise MixError(f"{at}: {e}") from None
    ex = m.extra
    missing = [k for k in ("tokenizer_fingerprint", "prefixes", "eod_id", "vocab_size") if k not in ex]
    if missing:
        raise MixError(f"{at}: {folder / 'manifest.json'} lacks field {missing[0]!r}")
    sft = bool(ex.get("sft", False))
    prefixes = list(ex["prefixes"])
    mask_prefixes = list(ex.get("mask_prefixes") or [])
    if sft and len(mask_prefixes) != len(prefixes):
        raise MixError(
            f"{at}: {folder / 'manifest.json'} is an SFT shard set with {len(prefixes)} prefixes "
            f"but {len(mask_prefixes)} mask_prefixes"
        )
    prefix_tokens = []
    for rel in prefixes:
        p = folder / rel
        for suffix in (".bin", ".idx"):
            if not p.with_name(p.name + suffix).exists():
                raise MixError(f"{at}: shard file {p}{suffix} is missing")
        prefix_tokens.append(_idx_tokens(p))
    for rel in mask_prefixes:
        p = folder / rel
        for suffix in (".bin", ".idx"):
            if not p.with_name(p.name + suffix).exists():
                raise MixError(f"{at}: mask file {p}{suffix} is missing")
    total = sum(prefix_tokens)
    if "tokens" in m.counts and int(m.counts["tokens"]) != total:
        raise MixError(
            f"{at}: {folder / 'manifest.json'} counts.tokens = {m.counts['tokens']} but its .idx files hold {total}"
        )
    if total == 0:
        raise MixError(f"{at}: shard set {folder} holds no tokens")
    return ShardSetInfo(
        name=name,
        fingerprint=m.fingerprint,
        tokenizer_fingerprint=str(ex["tokenizer_fingerprint"]),
        sft=sft,
        tokens=total,
        documents=int(m.counts.get("documents", 0)),
        eod_id=int(ex["eod_id"]),
        vocab_size=int(ex["vocab_size"]),
        prefixes=prefixes,
        mask_prefixes=mask_prefixes,
        prefix_tokens=prefix_tokens,
    )


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SourcePlan:
    """One source within one stage: its weight, realised samples/tokens/share, and repeats."""

    weight: float  # normalised weight asked for
    samples: int  # sequences drawn from this source in the stage (exact)
    tokens: int  # samples * seq_len
    share: float  # samples / stage samples
    epochs: float  # passes over the source within this stage
    cumulative_epochs: float  # passes over the source up to the end of this stage (whole schedule)
    stream_offset: list[int]  # per prefix: first stream sample this stage reads
    prefix_samples: list[int]  # per prefix: samples this stage reads


@dataclass(kw_only=True)
class StagePlan:
    """One stage: its place in the phase's global sample order and its sources."""

    index: int
    start_sample: int  # global sample index of the stage's first sample within the phase
    samples: int
    tokens: int
    sources: dict[str, SourcePlan]


@dataclass(kw_only=True)
class PhasePlan:
    """All stages of one phase, the per-prefix stream lengths, and the phase's fingerprint."""

    phase: str
    seed: int  # Megatron random_seed used by every GPTDataset of this phase
    seq_len: int
    fingerprint: str
    samples: int
    tokens: int
    stages: list[StagePlan]
    stream_samples: dict[str, list[int]]  # per source, per prefix: length of its stream over the phase
    sources: dict[str, ShardSetInfo]

    def stage_of(self, k: int) -> int:
        """Index of the stage that holds global sample ``k``."""
        starts = [s.start_sample for s in self.stages]
        return bisect_right(starts, k) - 1


@dataclass(kw_only=True)
class MixPlan:
    """Plan of a whole schedule: phases in training order, with exact numbers; JSON for analysis."""

    fingerprint: str
    seq_len: int
    seed: int
    tokenizer_fingerprint: str
    phases: dict[str, PhasePlan]
    schedule: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def phase(self, name: str | None = None) -> PhasePlan:
        """The plan of phase ``name`` (may be omitted when the plan has one phase)."""
        if name is None:
            if len(self.phases) != 1:
                raise MixError(f"the plan has phases {list(self.phases)}; name one")
            return next(iter(self.phases.values()))
        if name not in self.phases:
            raise MixError(f"phase {name!r} is not in the plan (it has {list(self.phases)})")
        return self.phases[name]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` reads it back."""
        return {"plan_version": PLAN_VERSION, **as_dict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MixPlan:
        """Rebuild a plan written by :meth:`to_dict`."""
        if d.get("plan_version") != PLAN_VERSION:
            raise MixError(f"unknown mix plan version {d.get('plan_version')!r} (this frontload reads {PLAN_VERSION})")
        phases = {}
        # JSON sorts keys; training order is the PHASES order.
        for name, p in sorted(d["phases"].items(), key=lambda kv: PHASES.index(kv[0])):
            stages = [
                StagePlan(**{**s, "sources": {k: SourcePlan(**v) for k, v in s["sources"].items()}})
                for s in p["stages"]
            ]
            sources = {k: ShardSetInfo(**v) for k, v in p["sources"].items()}
            phases[name] = PhasePlan(**{**p, "stages": stages, "sources": sources})
        rest = {k: v for k, v in d.items() if k not in ("phases", "plan_version")}
        return cls(**rest, phases=phases)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> MixPlan:
        """Read a plan written by :meth:`write`."""
        import json

        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise MixError(f"{path}: not a readable mix plan: {e}") from None

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per phase, stage and source (for a DataFrame or a DuckDB table)."""
        out = []
        for name, ph in self.phases.items():
            for st in ph.stages:
                for i, (src, sp) in enumerate(st.sources.items()):
                    out.append(
                        {
                            "plan": self.fingerprint,
                            "phase": name,
                            "phase_fingerprint": ph.fingerprint,
                            "stage": st.index,
                            "source": src,
                            "weight": sp.weight,
                            "share": sp.share,
                            "samples": sp.samples,
                            "tokens": sp.tokens,
                            "epochs": sp.epochs,
                            "cumulative_epochs": sp.cumulative_epochs,
                            "stage_start_sample": st.start_sample,
                            "stage_samples": st.samples,
                            "source_tokens": ph.sources[src].tokens,
                            "last_in_stage": i == len(st.sources) - 1,
                        }
                    )
        return out

    def format_table(self) -> str:
        """A readable table: per phase, stage and source the share, samples, tokens and repeats."""
        head = ("phase", "stage", "source", "weight", "share", "samples", "tokens", "epochs", "total ep.")
        rows = []
        for r in self.rows():
            rows.append(
                (
                    r["phase"],
                    str(r["stage"]),
                    r["source"],
                    f"{r['weight']:.3f}",
                    f"{r['share']:.3f}",
                    f"{r['samples']:,}",
                    _human(r["tokens"]),
                    f"{r['epochs']:.2f}",
                    f"{r['cumulative_epochs']:.2f}",
                )
            )
            if r["last_in_stage"]:
                st = self.phases[r["phase"]].stages[r["stage"]]
                rows.append(
                    (r["phase"], str(st.index), "(stage)", "", "1.000", f"{st.samples:,}", _human(st.tokens), "", "")
                )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {3, 4, 5, 6, 7, 8}

        def fmt(r: Sequence[str]) -> str:
            cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            return "  ".join(cells).rstrip()

        lines = [
            f"mix plan {self.fingerprint}  seq_len={self.seq_len}  seed={self.seed}  "
            f"tokenizer={self.tokenizer_fingerprint}",
            fmt(head),
            fmt(["-" * w for w in widths]),
        ]
        lines += [fmt(r) for r in rows]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _normalize(weights: Sequence[float]) -> list[float]:
    # Megatron normalises the weights twice (BlendedMegatronDatasetBuilder, then BlendedDataset);
    # doing the same gives the exact floats its blending index is built from.
    from megatron.core.datasets.utils import normalize

    return normalize(normalize(list(weights)))


def blending_counts(
    weights: Sequence[float], size: int, *, prefix: int | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Samples per dataset among the first ``prefix`` (default all) of the ``size`` samples that
    Megatron's ``BlendedDataset`` draws for these weights; with ``prefix``, also the counts over all."""
    from megatron.core.datasets import helpers

    dataset_index = np.zeros(size, dtype=np.int16)
    dataset_sample_index = np.zeros(size, dtype=np.int64)
    if size:
        helpers.build_blending_indices(
            dataset_index, dataset_sample_index, _normalize(weights), len(weights), size, False
        )
    del dataset_sample_index
    full = np.bincount(dataset_index, minlength=len(weights)).astype(np.int64)
    if prefix is None:
        return full
    return np.bincount(dataset_index[:prefix], minlength=len(weights)).astype(np.int64), full


def megatron_blend_size(weights: Sequence[float], samples: int) -> int:
    """Length of the ``BlendedDataset`` Megatron's builder makes when asked for ``samples``: the sum
    of each dataset's rounded-up share, a few samples more than asked; we read only the first ones."""
    from megatron.core.datasets.blended_megatron_dataset_builder import _get_size_per_split_per_dataset
    from megatron.core.datasets.utils import normalize

    return sum(s[0] for s in _get_size_per_split_per_dataset(normalize(list(weights)), [samples, 0, 0], 0.0))


def _prefix_blend(
    weights: Mapping[str, float], infos: Mapping[str, ShardSetInfo]
) -> tuple[list[tuple[str, int]], list[float]]:
    """Spread each source's normalised weight over its prefixes by their token counts, so every
    token of a source is equally likely whichever shard file holds it."""
    owners, flat = [], []
    for source, w in weights.items():
        info = infos[source]
        for j, pt in enumerate(info.prefix_tokens):
            if pt > 0:
                owners.append((source, j))
                flat.append(w * pt / info.tokens)
    return owners, flat


def _stage_samples(stage: MixStage, infos: Mapping[str, ShardSetInfo], seq_len: int) -> int:
    if stage.samples is not None:
        return stage.samples
    if stage.tokens is not None:
        return math.ceil(stage.tokens / seq_len)
    if stage.epochs is not None:
        return math.ceil(stage.epochs * sum(infos[s].tokens for s in stage.weights) / seq_len)
    return math.ceil(sum(stage.source_tokens.values()) / seq_len)


def _phase_seed(seed: int, phase: str) -> int:
    # Distinct per phase so a source used in pretraining and SFT is not read in the same order.
    return int(fingerprint("mix-seed", seed, phase), 16) % (2**31 - 1)


def plan_mix(
    schedule: MixSchedule | Sequence[MixStage],
    shard_dirs: Mapping[str, str | os.PathLike],
    *,
    seq_len: int,
    seed: int,
    phase: str = "pretrain",
) -> MixPlan:
    """Plan a schedule (or one phase's list of stages, named by ``phase``) against its shard sets.

    Errors name the phase, stage and source: a shard set that is missing or unreadable, shard sets
    with different tokenizer fingerprints, or a source repeated beyond its cap.
    """
    if not isinstance(schedule, MixSchedule):
        if phase not in PHASES:
            raise MixError(f"unknown phase {phase!r} (phases: {', '.join(PHASES)})")
        schedule = MixSchedule(**{phase: list(schedule)})
    if seq_len <= 0:
        raise MixError(f"seq_len must be positive, got {seq_len}")
    infos = _read_sources(schedule, shard_dirs)
    repeats = _Repeats(schedule)
    phases: dict[str, PhasePlan] = {}
    for ph, stages in schedule.phases().items():
        phases[ph] = _plan_phase(ph, stages, infos, repeats, seq_len=seq_len, seed=seed)
    plan_fp = fingerprint(
        "mix-plan", PLAN_VERSION, {p: v.fingerprint for p, v in phases.items()}, as_dict(schedule.repeat_caps)
    )
    return MixPlan(
        fingerprint=plan_fp,
        seq_len=seq_len,
        seed=seed,
        tokenizer_fingerprint=next(iter(infos.values())).tokenizer_fingerprint,
        phases=phases,
        schedule=as_dict(schedule),
        warnings=repeats.warnings,
    )


def _read_sources(schedule: MixSchedule, shard_dirs: Mapping[str, str | os.PathLike]) -> dict[str, ShardSetInfo]:
    """Every source's shard set, read once; they must share one tokenizer and end-of-document id."""
    infos: dict[str, ShardSetInfo] = {}
    first_user: dict[str, str] = {}
    for ph, stages in schedule.phases().items():
        for i, stage in enumerate(stages):
            where = f"{ph}[{i}]"
            for source in stage.weights:
                if source in infos:
                    continue
                if source not in shard_dirs:
                    known = ", ".join(sorted(shard_dirs)) or "none"
                    raise MixError(f"{where}: source {source!r} has no shard set (shard sets given: {known})")
                infos[source] = read_shard_set(source, shard_dirs[source], where=where)
                first_user[source] = where
    ref_name = next(iter(infos))
    ref = infos[ref_name]
    for name, info in infos.items():
        if info.tokenizer_fingerprint != ref.tokenizer_fingerprint:
            raise MixError(
                f"{first_user[name]}: source {name!r} was tokenized with tokenizer "
                f"{info.tokenizer_fingerprint}, but source {ref_name!r} with {ref.tokenizer_fingerprint}; "
                "rebuild its shards with the study's tokenizer"
            )
    for name, info in infos.items():
        if info.eod_id != ref.eod_id:
            raise MixError(f"{first_user[name]}: source {name!r} has eod_id {info.eod_id}, unlike the others")
    return infos


class _Repeats:
    """Epochs read per source over the whole schedule so far: refused beyond a cap, warned once above a threshold."""

    def __init__(self, schedule: MixSchedule) -> None:
        self.schedule = schedule
        self.consumed: dict[str, float] = {}
        self.warnings: list[str] = []

    def add(self, where: str, source: str, epochs: float, tokens: int) -> float:
        """Count ``epochs`` more of ``source`` (read in stage ``where``); returns its cumulative epochs."""
        cum = self.consumed.get(source, 0.0) + epochs
        self.consumed[source] = cum
        cap = self.schedule.repeat_caps.get(source)
        if cap is not None and cum > cap + 1e-9:
            raise MixError(
                f"{where}: source {source!r} would be read {cum:.2f} times over by the end of this stage, "
                f"beyond its repeat cap of {cap:g} epochs ({tokens:,} tokens in its shard set); "
                "lower the budget or its weight, raise repeat_caps, or add data"
            )
        # An explicit cap is the user's decision on repeats; without one, warn once per source.
        over = cap is None and cum > self.schedule.warn_epochs
        if over and not any(f"source {source!r} is repeated" in m for m in self.warnings):
            msg = (
                f"{where}: source {source!r} is repeated {cum:.2f} epochs by the end of this stage "
                f"(more than {self.schedule.warn_epochs:g}); set repeat_caps.{source} to accept or forbid this"
            )
            self.warnings.append(msg)
            # stacklevel points at plan_mix's caller, as when this check was written inline there.
            warnings.warn(msg, MixWarning, stacklevel=4)
        return cum


def _plan_phase(
    ph: str,
    stages: Sequence[MixStage],
    infos: Mapping[str, ShardSetInfo],
    repeats: _Repeats,
    *,
    seq_len: int,
    seed: int,
) -> PhasePlan:
    """One phase's stages in order; each prefix is one stream that a later stage continues."""
    phase_sources = {s: infos[s] for st in stages for s in st.weights}
    offsets = {s: [0] * len(infos[s].prefixes) for s in phase_sources}
    need = {s: [0] * len(infos[s].prefixes) for s in phase_sources}
    stage_plans = []
    start = 0
    for i, stage in enumerate(stages):
        where = f"{ph}[{i}]"
        n = _stage_samples(stage, infos, seq_len)
        if n <= 0:
            raise MixError(f"{where}: the budget gives no sample of seq_len {seq_len}")
        # Sources in name order: the blend (and so the sample order) must not depend on how
        # the table was written or on a JSON round trip of the plan.
        weights = dict(sorted(stage.weights.items()))
        total_w = sum(weights.values())
        norm = {s: w / total_w for s, w in weights.items()}
        owners, flat = _prefix_blend(norm, infos)
        # The built BlendedDataset is a little longer than n and its tail also reads from each
        # prefix's stream; the stream must be long enough for it, though training never reads it.
        # Megatron's greedy index does not depend on its length, so its first n entries are the stage.
        counts, full = blending_counts(flat, megatron_blend_size(flat, n), prefix=n)
        for (source, j), c in zip(owners, full):
            need[source][j] = max(need[source][j], offsets[source][j] + int(c))
        sources = {}
        for source in weights:
            info = infos[source]
            prefix_samples = [0] * len(info.prefixes)
            for (src, j), c in zip(owners, counts):
                if src == source:
                    prefix_samples[j] = int(c)
            samples = sum(prefix_samples)
            epochs = samples * seq_len / info.tokens
            sources[source] = SourcePlan(
                weight=norm[source],
                samples=samples,
                tokens=samples * seq_len,
                share=samples / n,
                epochs=epochs,
                cumulative_epochs=repeats.add(where, source, epochs, info.tokens),
                stream_offset=list(offsets[source]),
                prefix_samples=prefix_samples,
            )
            offsets[source] = [o + c for o, c in zip(offsets[source], prefix_samples)]
        stage_plans.append(StagePlan(index=i, start_sample=start, samples=n, tokens=n * seq_len, sources=sources))
        start += n
    phase_seed = _phase_seed(seed, ph)
    phase_fp = fingerprint(
        "mix-phase",
        PLAN_VERSION,
        ph,
        as_dict(stages),
        {s: phase_sources[s].fingerprint for s in sorted(phase_sources)},
        seq_len,
        phase_seed,
    )
    return PhasePlan(
        phase=ph,
        seed=phase_seed,
        seq_len=seq_len,
        fingerprint=phase_fp,
        samples=start,
        tokens=start * seq_len,
        stages=stage_plans,
        stream_samples={s: [max(a, b) for a, b in zip(offsets[s], need[s])] for s in phase_sources},
        sources=phase_sources,
    )
