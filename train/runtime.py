"""Process-group and model-parallel set-up for one process or many (``torchrun``), on CPU or GPU.

:func:`init_distributed` is the one entry point: under ``torchrun`` it joins the launched group
(NCCL on GPU, gloo on CPU); in a plain ``python`` process it creates a world of size 1 with an
in-memory store, so nothing needs a launcher. It then sets up Megatron-core's tensor/pipeline/data
parallel groups and its RNG tracker. Invariants: calling it again with the same sizes is a no-op;
with different tp/pp the model-parallel groups are rebuilt (the process group is kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from frontload.core.errors import FrontloadError
from frontload.train import compat


@dataclass(frozen=True)
class Runtime:
    """Where this process sits: global rank and world size, data-parallel rank/size, device."""

    rank: int
    world_size: int
    dp_rank: int
    dp_size: int
    tp: int
    pp: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the rank that writes shared files (checkpoint metadata, config)."""
        return self.rank == 0


def init_distributed(tp: int = 1, pp: int = 1, seed: int | None = 1234, backend: str | None = None) -> Runtime:
    """Join or create the process group, build Megatron's parallel groups, seed every RNG.

    ``seed=None`` leaves the RNG states of an already initialised process alone (loading a model
    for evaluation must not reset a running phase's random streams); fresh groups are always seeded.
    """
    from megatron.core import parallel_state

    compat.install()
    if not dist.is_initialized():
        backend = backend or ("nccl" if compat.cuda_available() else "gloo")
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            if compat.cuda_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend=backend)
        else:
            # One process needs no rendezvous: an in-memory store, no port.
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    world = dist.get_world_size()
    if world % (tp * pp):
        raise FrontloadError(f"world size {world} is not divisible by tp*pp = {tp}*{pp}")
    if parallel_state.model_parallel_is_initialized():
        same = (
            parallel_state.get_tensor_model_parallel_world_size() == tp
            and parallel_state.get_pipeline_model_parallel_world_size() == pp
        )
        if not same:
            parallel_state.destroy_model_parallel()
    fresh = not parallel_state.model_parallel_is_initialized()
    if fresh:
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, create_gloo_process_groups=True
        )
    if seed is not None or fresh:
        seed_everything(1234 if seed is None else seed)
    return current_runtime()


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and Megatron's named RNG states (offset per tp/pp rank as Megatron does)."""
    import random

    import numpy as np
    from megatron.core import parallel_state, tensor_parallel

    pp_rank = parallel_state.get_pipeline_model_parallel_rank()
    seed = seed + 100 * pp_rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def current_runtime() -> Runtime:
    """The :class:`Runtime` of an initialised process."""
    from megatron.core import parallel_state

    return Runtime(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
        tp=parallel_state.get_tensor_model_parallel_world_size(),
        pp=parallel_state.get_pipeline_model_parallel_world_size(),
        device=compat.device(),
    )


def shutdown() -> None:
    """Tear down Megatron's groups and the process group (for tests and clean exits)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
