"""Optimizer, gradient reduction and learning-rate schedule for the one training loop.

Two back ends with one interface (:class:`Optimizer`):

* ``megatron`` (default where it runs): Megatron-core ``DistributedDataParallel`` (contiguous grad
  buffers, data-parallel all-reduce) plus ``get_megatron_optimizer`` (Adam with decoupled weight
  decay, grad clipping by the global norm). On CPU it runs under :mod:`frontload.train.compat`.
* ``torch``: the bare model, ``torch.optim.AdamW``, gradients all-reduced by hand.

Both normalise the loss the same way: a loss function returns a *sum* over its loss units (tokens,
sequences) and how many units it covered; after all micro batches of a step the gradients are
summed over data-parallel ranks and divided by the global unit count (Megatron's
``calculate_per_token_loss`` path). So one rank with global batch G and two ranks with G/2 each
compute the same gradient, up to float summation order.

The schedule is Megatron-core's ``OptimizerParamScheduler`` (linear warmup, then cosine, linear,
WSD or constant), stepped once per optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from frontload.core.config import ConfigError
from frontload.train import compat


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW hyper-parameters and the learning-rate schedule of one phase."""

    backend: Literal["auto", "megatron", "torch"] = "auto"  # auto = Megatron-core's optimizer, torch AdamW if it fails
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # learning rate at the end of the decay
    warmup_steps: int = 0  # linear warmup from 0 to lr
    schedule: Literal["cosine", "wsd", "linear", "constant"] = "cosine"  # decay after warmup
    wsd_decay_fraction: float = 0.2  # WSD: share of the steps spent annealing at the end
    weight_decay: float = 0.1  # decoupled weight decay
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.95  # Adam beta2
    eps: float = 1e-8  # Adam epsilon
    clip_grad: float = 1.0  # clip the global gradient norm to this (0 = no clipping)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError("min_lr", f"must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0 < self.wsd_decay_fraction <= 1:
            raise ConfigError("wsd_decay_fraction", f"must be in (0, 1], got {self.wsd_decay_fraction}")
        if self.weight_decay < 0 or self.clip_grad < 0:
            raise ConfigError("weight_decay", "weight_decay and clip_grad must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("beta1", "beta1 and beta2 must be in [0, 1)")


class Optimizer:
    """One optimizer step over accumulated gradients: ``zero_grad``, ``step(num_units) -> grad_norm``."""

    backend: str
    model: Any  # what the loop calls forward on (DDP wrapper or bare model)
    scheduler: Any

    def zero_grad(self) -> None:
        raise NotImplementedError

    def step(self, num_units: torch.Tensor) -> float:
        """Reduce gradients over data-parallel ranks, divide by the global ``num_units``, clip, update."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    @property
    def param_groups(self) -> list[dict]:
        # Read live every time: load_state_dict replaces the inner optimizer's group dicts, and a
        # scheduler writing into stale copies would silently freeze the learning rate after a resume.
        return self.inner.param_groups

    @property
    def lr(self) -> float:
        return float(self.param_groups[0]["lr"])


class MegatronOptimizer(Optimizer):
    """Megatron-core DDP + ``get_megatron_optimizer``."""

    backend = "megatron"

    def __init__(self, model, cfg: OptimConfig, bf16: bool) -> None:
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        tconfig = model.config
        tconfig.calculate_per_token_loss = True  # grads are divided by the global unit count, not by dp size
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=False
        )
        opt_config = OptimizerConfig(
            optimizer="adam",
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            weight_decay=cfg.weight_decay,
            adam_beta1=cfg.beta1,
            adam_beta2=cfg.beta2,
            adam_eps=cfg.eps,
            clip_grad=cfg.clip_grad,
            bf16=bf16,
            params_dtype=torch.bfloat16 if bf16 else torch.float32,
        )
        if bf16:
            from megatron.core.transformer.module import Float16Module

            # As Megatron's own trainer does: bf16 weights inside, fp32 losses/logits outside.
            model = Float16Module(tconfig, model)
        with compat.cuda_as_cpu():
            self.model = DistributedDataParallel(config=tconfig, ddp_config=ddp_config, module=model)
            self.inner = get_megatron_optimizer(opt_config, [self.model])

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.inner.zero_grad()

    def step(self, num_units: torch.Tensor) -> float:
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads([self.model], num_tokens=num_units.clone())
        with compat.cuda_as_cpu():
            _, grad_norm, _ = self.inner.step()
        return float(grad_norm) if grad_norm is not None else float("nan")

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with compat.cuda_as_cpu():
            self.inner.load_state_dict(state)


class TorchOptimizer(Optimizer):
    """Plain ``torch.optim.AdamW`` with a hand-written data-parallel gradient all-reduce."""

    backend = "torch"

    def __init__(self, model, cfg: OptimConfig) -> None:
        self.model = model
        self.cfg = cfg
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            # Megatron's default: no weight decay on norms and biases (1-D parameters).
            (no_decay if p.dim() < 2 or name.endswith(".bias") else decay).append(p)
        self.inner = torch.optim.AdamW(
            [{"params": decay}, {"params": no_decay, "wd_mult": 0.0}],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)

    def step(self, num_units: torch.Tensor) -> float:
        from megatron.core import parallel_state

        params = [p for p in self.model.parameters() if p.grad is not None]
        total = num_units.clone().to(torch.float64)
        if dist.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
            group = parallel_state.get_data_parallel_group()
            dist.all_reduce(total, group=group)
            for p in params:
                dist.all_reduce(p.grad, group=group)
        scale = 1.0 / float(total) if float(total) > 0 else 0.0
        for p in params:
            p.grad.mul_(scale)
        if self.cfg.clip_grad > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.inner.step()
        return float(norm)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def build_scheduler(optimizer: Optimizer, cfg: OptimConfig, total_steps: int):
    """Megatron-core's ``OptimizerParamScheduler`` for ``total_steps`` optimizer steps."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    total_steps = max(total_steps, 1)
    warmup = min(cfg.warmup_steps, total_steps - 1)
    style = {"cosine": "cosine", "wsd": "WSD", "linear": "linear", "constant": "constant"}[cfg.schedule]
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if warmup else cfg.lr,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=total_steps,
        lr_decay_style=style,
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=total_steps,
        wd_incr_style="constant",
        wsd_decay_steps=max(1, math.ceil(cfg.wsd_decay_fraction * total_steps)) if style == "WSD" else None,
        lr_wsd_decay_style="linear" if style == "WSD" else None,
    )


def build_optimizer(model, cfg: OptimConfig, total_steps: int, bf16: bool = False) -> Optimizer:
    """Wrap ``model`` for data parallel and make its optimizer and schedule (``.scheduler``)."""
    opt: Optimizer
    if cfg.backend == "torch":
        opt = TorchOptimizer(model, cfg)
    else:
        try:
            opt = MegatronOptimizer(model, cfg, bf16=bf16)
        except (RuntimeError, AssertionError, ImportError, TypeError):
            if cfg.backend == "megatron":
                raise
            model.config.calculate_per_token_loss = False
            opt = TorchOptimizer(model, cfg)
    opt.scheduler = build_scheduler(opt, cfg, total_steps)
    return opt
