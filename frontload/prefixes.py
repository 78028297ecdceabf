"""Shared pretraining prefixes: arms that agree on their first pretraining stages train them once.

:func:`plan_prefixes` groups a study's arms into a tree of :class:`PrefixGroup` from their pretraining
stages alone (nothing is read from disk), and says why arms that could have shared do not; the
runner turns each group into a ``pretrain-prefix`` step per training seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from frontload.core.config import as_dict
from frontload.corpus.mix import MixStage
from frontload.study_file import ArmSection, Study


@dataclass(frozen=True)
class PrefixGroup:
    """Arms that agree on their first ``stages`` pretraining stages and train them once, then branch.

    Groups form a tree: a group inside another (its ``parent``) agrees on more stages and continues
    from the outer group's checkpoint; an arm branches from the innermost group that holds it.
    """

    index: int  # 1-based, in study order (names the step: pretrain-prefix:<index>:s<seed>)
    arms: tuple[str, ...]
    stages: list[MixStage]  # the shared stages
    samples: int  # samples the shared stages hold
    shared_steps: int  # steps trained once: the whole global batches inside the shared stages
    total_steps: int  # steps of the whole phase (the learning-rate schedule spans them)
    parent: int | None = None  # index of the group this one continues from

    def step_id(self, seed: int) -> str:
        return f"pretrain-prefix:{self.index}:s{seed}"


def _stage_samples(stage: MixStage, seq_len: int) -> int | None:
    """Samples a stage holds, known before its shards exist (None for an epochs budget)."""
    if stage.samples is not None:
        return stage.samples
    if stage.tokens is not None:
        return math.ceil(stage.tokens / seq_len)
    if stage.source_tokens:
        return math.ceil(sum(stage.source_tokens.values()) / seq_len)
    return None  # epochs: a multiple of the shard sets' token counts


def _stage_key(stage: MixStage) -> str:
    return json.dumps(as_dict(stage), sort_keys=True)


def plan_prefixes(study: Study) -> tuple[list[PrefixGroup], list[str]]:
    """The tree of shared pretraining prefixes, and why arms that could have shared do not.

    Arms share when they agree on their first stages (budgets, blends, hence shard sets) and on the
    phase's total steps: model, tokenizer, seed and the ``[pretrain]`` table (optimizer, learning-rate
    schedule, batch sizes) are one for all arms of a study. The total steps must agree because the
    learning-rate schedule spans them; a prefix trains the whole global batches inside its stages, and
    the batch that straddles a branch point belongs to the arms (or the inner prefix) after it.
    """
    from frontload.study_file import model_config, phase_config

    if len(study.arms) < 2:
        return [], []
    if not study.study.share_prefixes:
        return [], ["no shared pretraining prefixes: [study] share_prefixes = false"]
    model = model_config(study)
    cfg = phase_config(study, "pretrain", run_dir="-", plan="-", model=model)
    seq_len, batch = model.seq_len, cfg.global_batch
    notes: list[str] = []
    groups: list[PrefixGroup] = []

    def total_steps(arm: ArmSection) -> int | None:
        if cfg.steps is not None:
            return cfg.steps
        counts = [_stage_samples(st, seq_len) for st in arm.pretrain]
        return None if None in counts else sum(counts) // batch

    def split(arms: list[ArmSection], depth: int, parent: PrefixGroup | None) -> None:
        # ``arms`` agree on stages [0, depth) and on the total steps; group them by the next stage.
        by_next: dict[str, list[ArmSection]] = {}
        for arm in arms:
            if len(arm.pretrain) > depth:
                by_next.setdefault(_stage_key(arm.pretrain[depth]), []).append(arm)
        for same in by_next.values():
            if len(same) < 2:
                continue
            k = depth + 1
            while all(len(a.pretrain) > k for a in same) and len({_stage_key(a.pretrain[k]) for a in same}) == 1:
                k += 1
            names = ", ".join(a.name for a in same)
            counts = [_stage_samples(st, seq_len) for st in same[0].pretrain[:k]]
            if None in counts:
                notes.append(f"not shared ({names}): a shared stage's budget is in epochs")
                continue
            total = total_steps(same[0])
            shared = min(sum(counts) // batch, total)
            if shared <= (parent.shared_steps if parent else 0):
                # Not one whole batch beyond the outer prefix: these arms branch there, or deeper.
                if parent is None:
                    held = f"stages 0-{k - 1} hold" if k > 1 else "stage 0 holds"
                    notes.append(f"not shared ({names}): {held} fewer samples than one global batch")
                split(same, k, parent)
                continue
            group = PrefixGroup(
                index=len(groups) + 1,
                arms=tuple(a.name for a in same),
                stages=list(same[0].pretrain[:k]),
                samples=sum(counts),
                shared_steps=shared,
                total_steps=total,
                parent=parent.index if parent else None,
            )
            groups.append(group)
            split(same, k, group)

    by_first: dict[str, list[ArmSection]] = {}
    for arm in study.arms:
        by_first.setdefault(_stage_key(arm.pretrain[0]), []).append(arm)
    for arms in by_first.values():
        if len(arms) < 2:
            continue
        names = ", ".join(a.name for a in arms)
        totals = {a.name: total_steps(a) for a in arms}
        if None in totals.values():
            notes.append(
                f"not shared ({names}): a stage's budget is in epochs, so the total steps (the learning-rate "
                "schedule's length) are known only once the shards exist"
            )
            continue
        by_total: dict[int, list[ArmSection]] = {}
        for a in arms:
            by_total.setdefault(totals[a.name], []).append(a)
        if len(by_total) > 1:
            notes.append(
                f"not shared across totals ({', '.join(f'{a.name}: {totals[a.name]} steps' for a in arms)}): the "
                "learning-rate schedule spans the phase's total steps, so it differs before the branch point"
            )
        for same in by_total.values():
            split(same, 0, None)
    return groups, notes
