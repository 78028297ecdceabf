r"""The RL phase: GRPO with verifiable rewards on the Megatron-core policy.

Each step samples ``prompts_per_step`` prompts from the RL set (its own seeded order) and
``group_size`` completions per prompt, scores each completion with the verifier (correct answer
= ``reward.correct``, plus an optional format reward), normalises rewards within each group into
advantages and takes ``minibatches × epochs`` optimiser steps on the clipped policy-ratio
objective (token-level averaging over the whole rollout batch, optional k3 KL to the frozen SFT
reference). The optimiser steps go through the one training loop shared with pretraining and SFT;
only the batch source and the loss differ.

This module holds the phase's config and its entry :func:`rl`; the parts live in their own rooms:
the objective in :mod:`~frontload.train.rl_loss`, rewards in :mod:`~frontload.train.rewards`, the
prompt sets in :mod:`~frontload.train.prompts`, rollouts in :mod:`~frontload.train.rollouts` and the
samplers (shared with evaluation) in :mod:`~frontload.train.sampling`.

Invariants:

* prompt and padding tokens never carry loss; only sampled completion tokens do;
* the old-policy log-probs of a rollout batch are those of the policy that sampled it (the
  trainer recomputes them before the first optimiser step, so a vLLM sampler's numerics never
  enter the ratio);
* a verifier that raises or runs past its timeout gives that completion reward 0 and adds one to
  ``verifier_errors``; the run goes on;
* a checkpoint holds the policy, optimiser, step, the reference fingerprint and the rollout RNG, so
  a killed run resumed from it logs the same metrics as one that was never stopped;
* under ``torchrun`` each data-parallel rank samples whole groups of its share of the step's prompts
  with seeds that do not depend on the number of ranks, so N ranks log what one rank logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frontload.core.errors import FrontloadError
from frontload.train.prompts import load_prompt_sets, prompt_set_fingerprint
from frontload.train.rewards import RewardConfig
from frontload.train.rl_loss import GRPOConfig, grpo_loss_fn
from frontload.train.rollouts import GRPOBatches


def _rl_optim():
    from frontload.train.optim import OptimConfig

    # RL nudges a fine-tuned model: small constant rate, no weight decay (it would pull away from SFT).
    return OptimConfig(lr=1e-5, min_lr=1e-5, schedule="constant", weight_decay=0.0, clip_grad=1.0)


@dataclass(kw_only=True)
class RLConfig:
    """A GRPO run from an SFT checkpoint on an RL prompt set."""

    run_dir: str  # run folder: config.json, events/, checkpoints/
    init_from: str  # the SFT checkpoint (or its run folder: latest checkpoint); also the KL reference
    prompts: str | dict[str, str]  # RL set: a corpus folder or JSONL file (question/answer), or {name: path, ...}
    prompt_weights: dict[str, float] = field(default_factory=dict)  # share of each named set; {} = by size
    steps: int = 10  # GRPO steps (rollout batches)
    prompts_per_step: int = 4  # prompts sampled per GRPO step
    group_size: int = 4  # completions per prompt (the GRPO group)
    max_new_tokens: int = 64  # completion budget (also capped by the model's context)
    temperature: float = 1.0  # sampling temperature; the ratio's log-probs use the same temperature
    top_p: float = 1.0  # nucleus sampling
    minibatches: int = 2  # optimiser steps per pass over a rollout batch
    epochs: int = 1  # passes over each rollout batch (optimiser steps per GRPO step = minibatches * epochs)
    micro_batch: int = 8  # sequences per forward/backward
    generation_batch: int = 64  # sequences decoded together by the in-process sampler
    loss: GRPOConfig = field(default_factory=GRPOConfig)  # clipping, KL, advantage normalisation
    reward: RewardConfig = field(default_factory=RewardConfig)  # verifier and format rewards
    optim: Any = field(default_factory=_rl_optim)  # OptimConfig: AdamW and schedule (default constant 1e-5)
    rollout_backend: Literal["megatron", "vllm"] = "megatron"  # in-process KV-cache sampler, or a vLLM engine
    vllm_kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE when the environment does not set it
    log_every: int = 1  # metrics event every N optimiser steps
    save_every: int = 0  # checkpoint every N GRPO steps (0 = only at the end)
    keep_last: int | None = None  # keep only the newest N checkpoints
    exit_after: int | None = None  # stop after N GRPO steps in this invocation; rerunning resumes
    seed: int = 1234  # prompt order, sampling and RNG streams
    arm: str | None = None  # study arm (recorded in config.json)
    sweep: dict[str, Any] | None = None  # the sweep the arm came from, {template, axes} (recorded in config.json)
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        from frontload.core.config import ConfigError, as_dict, from_mapping
        from frontload.train.optim import OptimConfig

        if isinstance(self.loss, dict):
            self.loss = from_mapping(GRPOConfig, self.loss, where="loss")
        if isinstance(self.reward, dict):
            self.reward = from_mapping(RewardConfig, self.reward, where="reward")
        if isinstance(self.optim, dict):
            table = {**as_dict(_rl_optim()), **self.optim}
            if "lr" in self.optim and "min_lr" not in self.optim:
                table["min_lr"] = self.optim["lr"]  # the default schedule is constant: a lone lr means that rate
            self.optim = from_mapping(OptimConfig, table, where="optim")
        for name in ("steps", "prompts_per_step", "minibatches", "epochs", "micro_batch", "generation_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        names = set(self.prompts) if isinstance(self.prompts, dict) else set()
        if isinstance(self.prompts, dict) and not self.prompts:
            raise ConfigError("prompts", "names no prompt set")
        for name, w in self.prompt_weights.items():
            if name not in names:
                raise ConfigError(f"prompt_weights.{name}", f"is not a named prompt set (sets: {sorted(names)})")
            if w < 0:
                raise ConfigError(f"prompt_weights.{name}", f"must be >= 0, got {w}")
        if self.prompt_weights and (set(self.prompt_weights) != names or not sum(self.prompt_weights.values()) > 0):
            raise ConfigError("prompt_weights", f"give a weight for every set {sorted(names)}, not all zero")
        if self.group_size < 2:
            raise ConfigError("group_size", f"GRPO needs at least 2 completions per prompt, got {self.group_size}")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ConfigError("temperature", f"GRPO samples its groups: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.rollout_backend not in ("megatron", "vllm"):
            raise ConfigError("rollout_backend", f"must be 'megatron' or 'vllm', got {self.rollout_backend!r}")
        if self.save_every < 0 or self.log_every < 1:
            raise ConfigError("save_every", "save_every must be >= 0 and log_every >= 1")
        if self.exit_after is not None and self.exit_after < 1:
            raise ConfigError("exit_after", f"must be >= 1, got {self.exit_after}")

    @property
    def updates_per_step(self) -> int:
        """Optimiser steps per GRPO step."""
        return self.minibatches * self.epochs


def reference_fingerprint(ckpt_dir: str | os.PathLike) -> str:
    """Fingerprint of a checkpoint's weights (the KL reference an RL run is tied to)."""
    from frontload.core.fingerprint import fingerprint_files

    files = sorted(Path(ckpt_dir).glob("model_tp*_pp*.pt"))
    if not files:
        raise FrontloadError(f"{ckpt_dir}: no model_tp*_pp*.pt weights")
    return fingerprint_files(files)


def _sft_checkpoint(parent: Path):
    """The model config, tokenizer folder and tokenizer of the SFT checkpoint RL starts from."""
    from frontload.corpus.tokenizer import load_tokenizer
    from frontload.train.checkpoint import read_meta
    from frontload.train.model import model_config_from_dict

    meta = read_meta(parent)
    model_config = model_config_from_dict(meta["model"], where=f"{parent / 'meta.json'}: model")
    tokenizer_dir = parent / "tokenizer"
    if not tokenizer_dir.exists():
        raise FrontloadError(f"{tokenizer_dir}: the SFT checkpoint holds no tokenizer copy")
    return model_config, tokenizer_dir, load_tokenizer(tokenizer_dir)


def _check_prompts_fit(config: RLConfig, prompt_sets: dict, tokenizer, seq_len: int) -> None:
    """Every prompt leaves room for a completion in the model's context."""
    from frontload.core.config import ConfigError

    prompts = [p for v in prompt_sets.values() for p in v]
    longest = max(len(ids) for ids in tokenizer.encode_batch([p.prompt for p in prompts]))
    if longest >= seq_len:
        raise ConfigError(
            "prompts",
            f"{config.prompts}: a prompt has {longest} tokens, the model's context is {seq_len}",
        )


def _check_resumable(resumed: Path, config: RLConfig, parent: Path, *, ref_fp: str, prompts_fp: str) -> None:
    """A run folder resumes only against the reference weights and the RL set it was trained with."""
    from frontload.core.config import ConfigError
    from frontload.train.checkpoint import read_meta

    rmeta = read_meta(resumed)
    if rmeta.get("reference_fingerprint") != ref_fp:
        raise ConfigError(
            "init_from",
            f"{resumed} was trained against reference {rmeta.get('reference_fingerprint')} but {parent} has "
            f"weights {ref_fp}; use a new run folder",
        )
    if rmeta.get("prompts_fingerprint") != prompts_fp:
        raise ConfigError(
            "prompts", f"{config.prompts} is not the RL set {resumed} was trained on; use a new run folder"
        )


def _check_ranks(config: RLConfig, model_config, rt) -> None:
    """Rollouts are split over data-parallel ranks, whole groups per rank (see frontload.train.rollouts)."""
    from frontload.core.config import ConfigError

    if model_config.tp > 1:
        raise FrontloadError(
            f"tp = {model_config.tp}: RL splits its rollouts over data-parallel ranks only; "
            "run it with a tp = 1 checkpoint (or in one process)"
        )
    if config.rollout_backend != "megatron":
        raise ConfigError(
            "rollout_backend",
            f"{config.rollout_backend!r} runs in one process; with {rt.world_size} ranks use 'megatron'",
        )
    if config.prompts_per_step % rt.dp_size:
        raise ConfigError(
            "prompts_per_step",
            f"{config.prompts_per_step} prompts do not split into whole groups over {rt.dp_size} ranks",
        )


def _policy_and_reference(config: RLConfig, model_config, parent: Path):
    """The policy and, when a KL term is asked for, a frozen copy of it as the reference; both from ``parent``."""
    from frontload.train.checkpoint import load_checkpoint

    model = model_config.build()
    load_checkpoint(parent, model=model, load_rng=False)
    reference = None
    if config.loss.kl_coef > 0:
        reference = model_config.build()
        load_checkpoint(parent, model=reference, load_rng=False)
        reference.eval().requires_grad_(False)
    return model, reference


def rl(config: RLConfig) -> Path:
    """Run (or resume) GRPO from ``config.init_from``; returns the final checkpoint folder."""
    from frontload.core.config import as_dict
    from frontload.core.events import RunFolder
    from frontload.train.checkpoint import latest_checkpoint
    from frontload.train.loop import LoopConfig, TrainState, resolve_checkpoint, train_loop
    from frontload.train.model import replace
    from frontload.train.optim import build_optimizer
    from frontload.train.runtime import init_distributed

    run_dir = Path(config.run_dir)
    parent = resolve_checkpoint(config.init_from)
    model_config, tokenizer_dir, tokenizer = _sft_checkpoint(parent)
    prompt_sets = load_prompt_sets(config.prompts)
    prompts_fp = prompt_set_fingerprint(prompt_sets, config.prompt_weights)
    ref_fp = reference_fingerprint(parent)
    _check_prompts_fit(config, prompt_sets, tokenizer, model_config.seq_len)

    # Sampling needs the whole model on a rank: a pipelined parent is gathered into one stage.
    model_config = replace(model_config, pp=1)
    rt = init_distributed(tp=model_config.tp, pp=1, seed=config.seed)
    if rt.world_size > 1:
        _check_ranks(config, model_config, rt)
    U = config.updates_per_step
    total = config.steps * U
    model, reference = _policy_and_reference(config, model_config, parent)
    optimizer = build_optimizer(model, config.optim, total, bf16=model_config.bf16)
    rl_extra = {
        "reference_checkpoint": str(parent),
        "reference_fingerprint": ref_fp,
        "prompts_fingerprint": prompts_fp,
    }

    class _RLState(TrainState):
        def checkpoint_extra(self):  # what ties an RL checkpoint to its reference model and prompt set
            return {"rl_step": self.step // U, **rl_extra}

    state = _RLState(
        model=optimizer.model,
        model_config=model_config,
        optimizer=optimizer,
        phase="rl",
        parent=str(parent),
        mix_plan_fingerprint=prompts_fp,  # the RL set is this phase's data plan
        tokenizer_dir=str(tokenizer_dir),
        tokenizer_fingerprint=tokenizer.fingerprint,
    )
    resumed = latest_checkpoint(run_dir)
    if resumed is not None:
        _check_resumable(resumed, config, parent, ref_fp=ref_fp, prompts_fp=prompts_fp)
        state.resume(run_dir)
        state.parent = str(parent)
    loop_cfg = LoopConfig(
        steps=total,
        global_batch=config.prompts_per_step * config.group_size,
        micro_batch=config.micro_batch,
        log_every=config.log_every,
        save_every=config.save_every * U,
        keep_last=config.keep_last,
        exit_after=config.exit_after * U if config.exit_after else None,
        progress=config.progress,
    )
    run = RunFolder(
        run_dir,
        stage="rl",
        config=as_dict(config),
        arm=config.arm,
        phase="rl",
        parent=str(parent),
        rank=rt.rank,
        extra={
            "reference_fingerprint": ref_fp,
            "prompts_fingerprint": prompts_fp,
            "seed": config.seed,
            "sweep": config.sweep,
        },
    )
    source = GRPOBatches(
        config=config, state=state, tokenizer=tokenizer, prompts=prompt_sets, run=run, reference=reference
    )
    try:
        last = train_loop(
            state, source, grpo_loss_fn(config.loss, config.temperature), loop_cfg, run, on_step=source.on_step
        )
    finally:
        source.close()
        run.close()
    return last or latest_checkpoint(run_dir)
