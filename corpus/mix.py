"""Mix schedules: which shard sets feed each phase and stage, in what share, for how many tokens.

A :class:`MixSchedule` lists, per phase (``pretrain``, ``sft``, ``rl``), stages in order; each stage
has a budget (tokens, samples or epochs) and a blend of shard sets. This is what a user writes (the
study file's ``pretrain`` and ``sft`` tables become one). :func:`frontload.corpus.mix_plan.plan_mix`
turns it into exact numbers and :func:`frontload.corpus.mix_data.build_phase_dataset` into the
training data of a phase.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from frontload.core.config import ConfigError, from_mapping
from frontload.core.errors import FrontloadError
from frontload.core.phases import PHASES

DEFAULT_WARN_EPOCHS = 4.0


class MixError(FrontloadError, ValueError):
    """A schedule cannot be planned or built; the message names the phase, stage and source."""


class MixWarning(UserWarning):
    """A source is repeated more often than the warning threshold (but within its cap)."""


# --------------------------------------------------------------------------------------------
# Schedule (what the user writes)
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class MixStage:
    """One stage of a phase: a budget and a blend of shard sets.

    Give the budget as exactly one of ``tokens``, ``samples`` or ``epochs`` with ``blend`` weights,
    or give ``source_tokens`` (exact tokens per source; the budget is their sum) alone.
    """

    tokens: float | None = None  # token budget of the stage (rounded up to whole samples of seq_len)
    samples: int | None = None  # sample budget of the stage (sequences of seq_len tokens)
    epochs: float | None = None  # budget as passes over the blend's sources: epochs x their total tokens
    blend: dict[str, float] = field(default_factory=dict)  # relative weight per shard set; normalised
    source_tokens: dict[str, float] = field(default_factory=dict)  # exact tokens per shard set, instead of blend

    def __post_init__(self) -> None:
        if self.source_tokens:
            if self.blend:
                raise ConfigError("source_tokens", "give either blend (weights) or source_tokens (exact), not both")
            if any(v is not None for v in (self.tokens, self.samples, self.epochs)):
                raise ConfigError(
                    "source_tokens", "the budget is the sum of source_tokens; drop tokens/samples/epochs"
                )
            weights, key = self.source_tokens, "source_tokens"
        else:
            if not self.blend:
                raise ConfigError("blend", "a stage needs a blend of shard sets (or source_tokens)")
            given = [k for k in ("tokens", "samples", "epochs") if getattr(self, k) is not None]
            if len(given) != 1:
                raise ConfigError("tokens", "give exactly one budget: tokens, samples or epochs")
            if (getattr(self, given[0])) <= 0:
                raise ConfigError(given[0], f"the budget must be positive, got {getattr(self, given[0])}")
            weights, key = self.blend, "blend"
        for source, w in weights.items():
            if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"{key}.{source}", f"must be a non-negative number, got {w!r}")
        if not any(w > 0 for w in weights.values()):
            raise ConfigError(key, f"all weights are zero: {weights}")

    @property
    def weights(self) -> dict[str, float]:
        """The blend's positive weights (relative or token counts), in the order written."""
        raw = self.source_tokens or self.blend
        return {s: float(w) for s, w in raw.items() if w > 0}


@dataclass(kw_only=True)
class MixSchedule:
    """Mix schedule of a study arm: per phase a list of stages, plus per-source repeat caps."""

    pretrain: list[MixStage] = field(default_factory=list)  # pretraining stages, in order
    sft: list[MixStage] = field(default_factory=list)  # SFT stages, in order (shard sets with loss masks)
    rl: list[MixStage] = field(default_factory=list)  # RL prompt stages, in order (optional)
    repeat_caps: dict[str, float] = field(default_factory=dict)  # max epochs per source over the whole schedule
    warn_epochs: float = DEFAULT_WARN_EPOCHS  # warn when a source without a cap is repeated more often

    def __post_init__(self) -> None:
        for phase in PHASES:
            stages = getattr(self, phase)
            for i, st in enumerate(stages):
                if isinstance(st, Mapping):  # built in Python from plain tables
                    stages[i] = from_mapping(MixStage, st, where=f"{phase}[{i}]")
        for source, cap in self.repeat_caps.items():
            if cap <= 0:
                raise ConfigError(f"repeat_caps.{source}", f"must be positive, got {cap}")
        if self.warn_epochs <= 0:
            raise ConfigError("warn_epochs", f"must be positive, got {self.warn_epochs}")
        if not any(getattr(self, p) for p in PHASES):
            raise ConfigError("pretrain", "the schedule has no stage in any phase")

    def phases(self) -> dict[str, list[MixStage]]:
        """The phases that have stages, in training order."""
        return {p: getattr(self, p) for p in PHASES if getattr(self, p)}
