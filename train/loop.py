"""The one training loop that pretraining, SFT and RL share: the phase changes the batches and the loss.

Per optimizer step the loop asks the batch source for this rank's micro batches of the global
batch that starts at ``consumed_samples``, runs forward/backward on each (gradients accumulate),
lets the optimizer reduce them over data-parallel ranks, divide by the global loss-unit count,
clip and update, steps the learning-rate schedule, logs a ``metrics`` event and saves a
checkpoint every ``save_every`` steps and at the end.

Invariants:

* The sample order is a function of the global sample index only, so resuming from a checkpoint
  at ``consumed_samples = k`` continues with sample ``k``: nothing skipped, nothing repeated.
* With the RNG states restored too, a resumed run's losses are bitwise those of an uninterrupted
  one on CPU (tested).
* Loss functions return a *sum* and a unit count; the loop never averages per micro batch, so
  the gradient does not depend on how the global batch is split over ranks and micro batches.
* With ``pp > 1`` the step's micro batches go through Megatron's pipeline schedule
  (:mod:`frontload.train.pipeline`, next-token loss only) and every stage logs the last stage's figures.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from frontload.core.config import ConfigError, Name
from frontload.core.errors import FrontloadError
from frontload.core.events import RunFolder
from frontload.core.progress import progress_bar
from frontload.train import compat
from frontload.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from frontload.train.model import ModelConfig, forward
from frontload.train.optim import OptimConfig, Optimizer

Batch = dict[str, Any]  # tensors "tokens", "labels", "loss_mask", "position_ids" [b, s]; lists "source", "index"
LossFn = Callable[[Any, Batch], tuple[torch.Tensor, torch.Tensor, dict[str, float]]]
BatchSource = Callable[[int, int], Sequence[Batch]]  # (step, consumed_samples) -> this rank's micro batches


@dataclass(kw_only=True)
class LoopConfig:
    """Batch sizes, length and checkpointing of one phase's training loop."""

    steps: int  # optimizer steps of the phase
    global_batch: int = 8  # samples per optimizer step, over all data-parallel ranks
    micro_batch: int = 4  # samples per forward/backward on one rank
    log_every: int = 1  # write a metrics event every this many steps
    save_every: int = 0  # checkpoint every this many steps (0 = only at the end)
    keep_last: int | None = None  # keep only the newest N checkpoints (None = all)
    exit_after: int | None = None  # stop (with a checkpoint) after this many steps in this invocation; rerun resumes
    stop_at: int | None = None  # end at this step with a checkpoint; the schedule still spans ``steps``
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("steps", f"must be >= 1, got {self.steps}")
        if self.stop_at is not None and not 0 <= self.stop_at <= self.steps:
            raise ConfigError("stop_at", f"must be between 0 and steps ({self.steps}), got {self.stop_at}")
        if self.micro_batch < 1 or self.global_batch < 1:
            raise ConfigError("global_batch", "global_batch and micro_batch must be >= 1")
        if self.log_every < 1 or self.save_every < 0:
            raise ConfigError("log_every", "log_every must be >= 1 and save_every >= 0")

    def accumulation(self, dp_size: int) -> int:
        """Micro batches per rank per step; the global batch must split evenly."""
        if self.global_batch % (self.micro_batch * dp_size):
            raise ConfigError(
                "global_batch",
                f"{self.global_batch} is not divisible by micro_batch * data-parallel ranks "
                f"({self.micro_batch} * {dp_size})",
            )
        return self.global_batch // (self.micro_batch * dp_size)


@dataclass(kw_only=True)
class TrainState:
    """Everything a step changes: model, optimizer (with its schedule) and the counters."""

    model: Any  # what forward runs on (Megatron DDP wrapper or the bare GPTModel)
    model_config: ModelConfig
    optimizer: Optimizer
    phase: str  # "pretrain", "sft", "rl"
    step: int = 0
    consumed_samples: int = 0
    consumed_by_source: dict[str, int] = field(default_factory=dict)
    parent: str | None = None  # checkpoint this phase started from
    mix_plan_fingerprint: str | None = None
    tokenizer_dir: str | None = None
    tokenizer_fingerprint: str | None = None

    def resume(self, path: str | os.PathLike) -> Path | None:
        """Load a checkpoint, or the newest of run folder ``path`` (weights, optimizer, schedule, RNG, counters)."""
        from frontload.train.checkpoint import META

        ckpt = Path(path) if (Path(path) / META).is_file() else latest_checkpoint(path)
        if ckpt is None:
            return None
        meta = load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.optimizer.scheduler)
        self.step = int(meta["step"])
        self.consumed_samples = int(meta["consumed_samples"])
        self.consumed_by_source = {k: int(v) for k, v in (meta.get("consumed_by_source") or {}).items()}
        self.parent = meta.get("parent")
        return ckpt

    def save(self, run_dir: str | os.PathLike, keep_last: int | None = None) -> Path:
        """Checkpoint the state into ``run_dir/checkpoints/step_<N>``."""
        return save_checkpoint(
            run_dir,
            model=self.model,
            model_config=self.model_config,
            optimizer=self.optimizer,
            scheduler=self.optimizer.scheduler,
            phase=self.phase,
            step=self.step,
            consumed_samples=self.consumed_samples,
            mix_plan_fingerprint=self.mix_plan_fingerprint,
            parent=self.parent,
            tokenizer_dir=self.tokenizer_dir,
            tokenizer_fingerprint=self.tokenizer_fingerprint,
            extra={"consumed_by_source": dict(sorted(self.consumed_by_source.items())), **self.checkpoint_extra()},
            keep_last=keep_last,
        )

    def checkpoint_extra(self) -> dict[str, Any]:
        """More ``meta.json`` fields for the next checkpoint; phases override it (RL: its reference model)."""
        return {}


def token_loss(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Next-token cross entropy summed over ``loss_mask`` tokens, and the number of such tokens.

    Pretraining's loss mask is all ones (or zero after EOD); SFT's is one on response tokens only.
    """
    losses = forward(model, batch["tokens"], batch["position_ids"], labels=batch["labels"])
    mask = batch["loss_mask"].to(losses.dtype)
    return (losses * mask).sum(), mask.sum(), {}


def _sum_over_dp(values: torch.Tensor) -> torch.Tensor:
    from megatron.core import parallel_state

    if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
        dist.all_reduce(values, group=parallel_state.get_data_parallel_group())
    return values


def _gather_over_dp(sources: list[str], extra_sums: dict[str, float]) -> tuple[Counter, dict[str, float]]:
    """Samples per source and loss-function metric sums over all data-parallel ranks.

    Objects, not one tensor: a rank may have had no micro batch this step (RL minibatches need not
    touch every rank's rows), and then it knows none of the metric names.
    """
    from megatron.core import parallel_state

    counts = Counter(sources)
    if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
        gathered: list[Any] = [None] * parallel_state.get_data_parallel_world_size()
        mine = (dict(counts), extra_sums)
        dist.all_gather_object(gathered, mine, group=parallel_state.get_data_parallel_group_gloo())
        counts, extra_sums = Counter(), {}
        for c, extra in gathered:
            counts.update(c)
            for k, v in extra.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + v
    return counts, extra_sums


def train_loop(
    state: TrainState,
    batches: BatchSource,
    loss_fn: LossFn,
    config: LoopConfig,
    run: RunFolder,
    on_step: Callable[[TrainState, dict[str, Any]], dict[str, Any] | None] | None = None,
) -> Path | None:
    """Train ``state`` until ``config.steps`` (or ``stop_at``); returns the last checkpoint written (None if none).

    ``on_step(state, metrics)`` runs after each optimizer step and may return extra metric fields
    (RL adds rewards) that go into the same ``metrics`` event.
    """
    pipelined = state.model_config.pp > 1
    if pipelined and (loss_fn is not token_loss or state.optimizer.backend != "megatron"):
        raise FrontloadError(
            f"pp = {state.model_config.pp}: pipeline-parallel training runs the next-token loss (pretrain, sft) "
            "with Megatron's optimizer; train this phase with pp = 1 (tensor or data parallel)"
        )
    model = state.model
    opt = state.optimizer
    last_ckpt: Path | None = None
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    start_step = state.step
    bar = progress_bar(
        total=config.steps if config.stop_at is None else config.stop_at,
        initial=state.step,
        desc=f"{state.phase}",
        unit="step",
        disable=not (config.progress and is_main),
    )
    device = compat.device()
    # A shared prefix ends early: its schedule is the whole phase's, its last step the branch point.
    end = config.steps if config.stop_at is None else config.stop_at
    model.train()
    while state.step < end:
        if config.exit_after is not None and state.step - start_step >= config.exit_after:
            if last_ckpt is None or not last_ckpt.name.endswith(f"{state.step:08d}"):
                # A time-limited job leaves a checkpoint of where it stopped, so no step is redone.
                last_ckpt = state.save(run.path, keep_last=config.keep_last)
            break
        t0 = time.perf_counter()
        micro = batches(state.step, state.consumed_samples)
        opt.zero_grad()
        # On the device: a CUDA loss cannot be added into a CPU tensor, and NCCL reduces CUDA tensors only.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        units = torch.zeros((), dtype=torch.float64, device=device)
        extra_sums: dict[str, float] = {}
        tokens = 0
        samples = 0
        sources: list[str] = []
        if pipelined:
            from frontload.train.pipeline import pipeline_step

            loss_sum, units = pipeline_step(model, micro, device)
        for mb in micro:
            if not pipelined:
                mb = compat.to_device(mb, device)
                loss, n, metrics = loss_fn(model, mb)
                loss.backward()
                loss_sum += loss.detach().to(torch.float64)
                units += n.detach().to(torch.float64)
                # A loss-function metric is a mean over the micro batch's loss units; weighting it by
                # them makes the step's figure the mean over all units, however the batch was split.
                weight = float(n) if metrics else 0.0
                for k, v in metrics.items():
                    extra_sums[k] = extra_sums.get(k, 0.0) + float(v) * weight
            tokens += mb["tokens"].numel()
            samples += mb["tokens"].shape[0]
            sources.extend(mb.get("source", []))
        # One all-reduce for the step's sums.
        counts = _sum_over_dp(
            torch.tensor(
                [loss_sum.item(), units.item(), tokens, samples, len(micro)],
                dtype=torch.float64,
                device=device,
            )
        )
        if pipelined:
            from frontload.train.pipeline import broadcast_from_last_stage

            # The loss lives on the last stage; every stage logs and counts the same figures.
            counts = broadcast_from_last_stage(counts)
        counts = counts.cpu()
        grad_norm = opt.step(units.to(torch.float32))
        opt.scheduler.step(1)
        state.step += 1
        sample_start = state.consumed_samples
        state.consumed_samples += int(counts[3])
        by_source, extra_sums = _gather_over_dp(sources, extra_sums)
        for src, n in by_source.items():
            state.consumed_by_source[src] = state.consumed_by_source.get(src, 0) + n
        elapsed = time.perf_counter() - t0
        total_units = float(counts[1])
        record = {
            "phase": state.phase,
            "step": state.step,
            "loss": float(counts[0]) / total_units if total_units > 0 else float("nan"),
            "lr": float(opt.param_groups[0]["lr"]),
            "grad_norm": grad_norm,
            "tokens_per_s": float(counts[2]) / elapsed if elapsed > 0 else float("nan"),
            "consumed_samples": state.consumed_samples,
            "consumed_by_source": dict(sorted(state.consumed_by_source.items())),
            "sample_start": sample_start,
            "loss_units": total_units,
        }
        for k in sorted(extra_sums):
            record[k] = extra_sums[k] / total_units if total_units > 0 else float("nan")
        if on_step is not None:
            record.update(on_step(state, record) or {})
        if state.step % config.log_every == 0 or state.step == end:
            run.log("metrics", **record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if (config.save_every and state.step % config.save_every == 0) or state.step == end:
            last_ckpt = state.save(run.path, keep_last=config.keep_last)
    bar.close()
    return last_ckpt


def dataset_batches(dataset, config: LoopConfig, dp_rank: int, dp_size: int) -> BatchSource:
    """A :data:`BatchSource` over an indexable dataset (``dataset[k] -> dict``) read in index order.

    Step ``t`` of a run reads global samples ``[consumed, consumed + global_batch)``; rank ``r``
    takes the ``r``-th contiguous slice of it, cut into micro batches. Samples past the end of the
    dataset wrap around (the mix plan sizes datasets so that this does not happen).
    """
    accumulation = config.accumulation(dp_size)
    per_rank = config.micro_batch * accumulation
    n = len(dataset)
    if n == 0:
        raise ConfigError("dataset", "is empty")

    def source(step: int, consumed: int) -> list[Batch]:
        first = consumed + dp_rank * per_rank
        out = []
        for a in range(accumulation):
            idx = [first + a * config.micro_batch + j for j in range(config.micro_batch)]
            out.append(collate([dataset[i % n] for i in idx], idx))
        return out

    return source


def collate(samples: list[dict[str, Any]], indices: list[int]) -> Batch:
    """Stack dataset samples into one micro batch (torch tensors, int64 ids, float loss mask)."""
    batch: Batch = {"index": list(indices)}
    for key in ("tokens", "labels", "position_ids"):
        batch[key] = torch.stack([torch.as_tensor(s[key], dtype=torch.int64) for s in samples])
    batch["loss_mask"] = torch.stack([torch.as_tensor(s["loss_mask"], dtype=torch.float32) for s in samples])
    batch["source"] = [str(s.get("source", "data")) for s in samples]
    return batch


@dataclass(kw_only=True)
class PhaseConfig:
    """What pretraining and SFT share: where to write, which data, batch sizes, schedule, checkpointing."""

    run_dir: str  # run folder: config.json, events/, checkpoints/, mix_plan.json, cache/
    shards: dict[Name, str] = field(default_factory=dict)  # shard set name -> shard set folder
    mix: Any = None  # a MixSchedule (frontload.corpus.mix) whose stages for this phase are trained on
    plan: str | None = None  # a mix plan JSON (instead of mix): trains the plan's stages for this phase
    tokenizer: str | None = None  # tokenizer dir; copied into every checkpoint
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW and learning-rate schedule
    steps: int | None = None  # optimizer steps; None = as many whole global batches as the plan holds
    global_batch: int = 8  # samples per optimizer step over all data-parallel ranks
    micro_batch: int = 4  # samples per forward/backward on one rank
    log_every: int = 1  # metrics event every N steps
    save_every: int = 0  # checkpoint every N steps (0 = only at the end)
    keep_last: int | None = None  # keep only the newest N checkpoints
    exit_after: int | None = None  # stop after N steps in this invocation, with a checkpoint; rerunning resumes
    stop_at: int | None = None  # end at this step (a shared prefix); the LR schedule still spans all steps
    resume_from: str | None = None  # a checkpoint of this phase to continue from (a shared prefix's last)
    seed: int = 1234  # model init, data order (through the mix plan) and RNG streams
    arm: str | None = None  # study arm this run belongs to (recorded in config.json)
    sweep: dict[str, Any] | None = None  # the sweep the arm came from, {template, axes} (recorded in config.json)
    init_from: str | None = None  # checkpoint (or run folder: its latest checkpoint) to start from
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        from frontload.corpus.mix import MixSchedule

        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if isinstance(self.mix, dict):
            from frontload.core.config import from_mapping

            self.mix = from_mapping(MixSchedule, self.mix, where="mix")
        if (self.mix is None) == (self.plan is None):
            raise ConfigError("mix", "give exactly one of mix (a schedule) or plan (a mix plan file)")
        if self.steps is not None and self.steps < 1:
            raise ConfigError("steps", f"must be >= 1, got {self.steps}")
        if self.micro_batch < 1 or self.global_batch < 1:
            raise ConfigError("global_batch", "global_batch and micro_batch must be >= 1")

    def loop_config(self, steps: int) -> LoopConfig:
        """The :class:`LoopConfig` of this phase for ``steps`` optimizer steps."""
        return LoopConfig(
            steps=steps,
            global_batch=self.global_batch,
            micro_batch=self.micro_batch,
            log_every=self.log_every,
            save_every=self.save_every,
            keep_last=self.keep_last,
            exit_after=self.exit_after,
            stop_at=self.stop_at,
            progress=self.progress,
        )


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or the latest checkpoint of a run folder."""
    from frontload.train.checkpoint import META, CheckpointError

    path = Path(path)
    if (path / META).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path}: neither a checkpoint nor a run folder with checkpoints")
    return latest


def run_phase(
    config: PhaseConfig,
    *,
    phase: str,
    model_config: ModelConfig,
    config_dict: dict[str, Any],
    loss_fn: LossFn = token_loss,
    on_step: Callable[[TrainState, dict[str, Any]], dict[str, Any] | None] | None = None,
) -> Path:
    """Plan or read the mix, build the phase's dataset, model and optimizer, resume, train; final checkpoint.

    Starts from ``config.init_from``'s weights when given (recorded as the parent), or from a
    fresh init; a run folder that already holds checkpoints resumes from its newest one.
    """
    from frontload.core.fingerprint import atomic_write_json
    from frontload.corpus.mix_data import build_phase_dataset
    from frontload.corpus.mix_plan import MixPlan, plan_mix
    from frontload.train.optim import build_optimizer
    from frontload.train.runtime import init_distributed

    run_dir = Path(config.run_dir)
    rt = init_distributed(tp=model_config.tp, pp=model_config.pp, seed=config.seed)
    shard_dirs = {k: Path(v) for k, v in config.shards.items()}
    if config.plan is not None:
        plan = MixPlan.read(config.plan)
    else:
        plan = plan_mix(config.mix, shard_dirs, seq_len=model_config.seq_len, seed=config.seed)
    phase_plan = plan.phase(phase)
    if phase_plan.seq_len != model_config.seq_len:
        raise ConfigError(
            "plan", f"the mix plan is for seq_len {phase_plan.seq_len}, the model has {model_config.seq_len}"
        )

    for source, info in phase_plan.sources.items():
        if info.vocab_size > model_config.vocab_size:
            raise ConfigError(
                "model.vocab_size",
                f"{model_config.vocab_size} is smaller than shard set {source!r}'s vocabulary ({info.vocab_size})",
            )
    tokenizer_fp = None
    if config.tokenizer is not None:
        from frontload.corpus.tokenizer import load_tokenizer

        tok = load_tokenizer(config.tokenizer)
        tokenizer_fp = tok.fingerprint
        if tok.vocab_size > model_config.vocab_size:
            raise ConfigError(
                "model.vocab_size", f"{model_config.vocab_size} is smaller than the tokenizer's {tok.vocab_size}"
            )
        if plan.tokenizer_fingerprint not in (None, "", tokenizer_fp):
            raise ConfigError(
                "tokenizer",
                f"{config.tokenizer} (fingerprint {tokenizer_fp}) is not the tokenizer the shards were made with "
                f"({plan.tokenizer_fingerprint})",
            )

    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "mix_plan.json", plan.to_dict())
    dataset = build_phase_dataset(plan, shard_dirs, run_dir / "cache", phase=phase)
    steps = config.steps or len(dataset) // config.global_batch
    if steps < 1:
        raise ConfigError(
            "global_batch", f"the {phase} plan holds {len(dataset)} samples, fewer than one global batch"
        )
    loop_cfg = config.loop_config(steps)

    parent = str(resolve_checkpoint(config.init_from)) if config.init_from else None
    model = model_config.build()
    if parent is not None:
        load_checkpoint(parent, model=model, load_rng=False)
    optimizer = build_optimizer(model, config.optim, steps, bf16=model_config.bf16)
    state = TrainState(
        model=optimizer.model,
        model_config=model_config,
        optimizer=optimizer,
        phase=phase,
        parent=parent,
        mix_plan_fingerprint=phase_plan.fingerprint,
        tokenizer_dir=config.tokenizer,
        tokenizer_fingerprint=tokenizer_fp,
    )
    resumed = latest_checkpoint(run_dir)
    if resumed is not None:
        from frontload.train.checkpoint import read_meta

        meta = read_meta(resumed)
        if meta.get("mix_plan_fingerprint") != phase_plan.fingerprint:
            raise ConfigError(
                "mix",
                f"{run_dir} was trained with mix plan {meta.get('mix_plan_fingerprint')}, this config makes "
                f"{phase_plan.fingerprint}; use a new run folder",
            )
        state.resume(resumed)
        state.parent = parent if parent is not None else meta.get("parent")
    elif config.resume_from is not None:
        # A branch of a shared prefix: the prefix's checkpoint (weights, optimizer, schedule, RNG,
        # counters) is where this run starts, and its parent, so the chain shows the branch point.
        # Its mix plan covers only the shared stages; the check below compares the data itself.
        resumed = resolve_checkpoint(config.resume_from)
        from frontload.train.checkpoint import read_meta

        if read_meta(resumed).get("phase") != phase:
            raise ConfigError(
                "resume_from", f"{resumed} is a {read_meta(resumed).get('phase')} checkpoint, not {phase}"
            )
        state.resume(resumed)
        state.parent = str(resumed)
        parent = state.parent
    if resumed is not None:
        planned = getattr(dataset, "consumed_by_source", None)
        if planned is not None and state.consumed_samples <= len(dataset):
            # The blending index says which sources samples [0, k) came from; a mismatch means the
            # data under the run folder is not the data the checkpoint was trained on.
            expected = planned(state.consumed_samples)
            if expected != state.consumed_by_source:
                raise ConfigError(
                    "mix",
                    f"{resumed}: consumed {state.consumed_by_source} per source, but the mix plan's first "
                    f"{state.consumed_samples} samples are {expected}; the data changed, use a new run folder",
                )
    run = RunFolder(
        run_dir,
        stage=phase,
        config=config_dict,
        arm=config.arm,
        phase=phase,
        parent=parent,
        rank=rt.rank,
        extra={"seed": config.seed, "sweep": config.sweep},
    )
    try:
        batches = dataset_batches(dataset, loop_cfg, rt.dp_rank, rt.dp_size)
        last = train_loop(state, batches, loss_fn, loop_cfg, run, on_step=on_step)
        if last is None and latest_checkpoint(run_dir) is None:
            # A branch whose prefix already reached the end trains nothing but still owns a final checkpoint.
            last = state.save(run_dir, keep_last=loop_cfg.keep_last)
    finally:
        run.close()
    return last or latest_checkpoint(run_dir)
