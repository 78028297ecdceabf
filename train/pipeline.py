"""Pipeline-parallel training steps, for models split over ``pp > 1`` stages.

:func:`pipeline_step` runs one optimizer step's micro batches through Megatron-core's pipeline
schedule (``get_forward_backward_func``: 1F1B, activations sent between stages, the loss on the
last stage) with the next-token loss of pretraining and SFT (loss masks included). Like the
one-stage path it returns a loss *sum* and a unit count, so the loop's normalisation (divide by the
global count in ``finalize_model_grads``) is the same whatever the split.

:func:`frontload.train.checkpoint.restage` cuts a checkpoint written with one pipeline size into
the stages of another, so a ``pp = 1`` checkpoint starts a ``pp = 2`` run and evaluation or export
gathers a ``pp = 2`` checkpoint into one process.

Invariant: on stages other than the last the returned sums are zero (the loop broadcasts the last
stage's figures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from frontload.core.errors import FrontloadError
from frontload.train import compat


def pipeline_step(model, micro: Sequence[dict[str, Any]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of ``micro`` through the pipeline; (loss sum, unit count) on the last stage, else 0."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from frontload.train.model import forward

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    units = torch.zeros((), dtype=torch.float64, device=device)
    batches = iter([compat.to_device(mb, device) for mb in micro])

    def forward_step(data_iterator, stage_model):
        batch = next(data_iterator)
        # Every stage gets the whole micro batch: the first reads tokens and positions, the last the
        # labels and loss mask; the middle ones run on the activations the schedule hands them.
        output = forward(stage_model, batch["tokens"], batch["position_ids"], labels=batch["labels"])
        return output, _token_loss_reducer(batch["loss_mask"])

    def _token_loss_reducer(mask: torch.Tensor) -> Callable:
        def reduce(losses: torch.Tensor):
            nonlocal loss_sum, units
            m = mask.to(losses.dtype)
            total, count = (losses * m).sum(), m.sum()
            loss_sum = loss_sum + total.detach().to(torch.float64)
            units = units + count.detach().to(torch.float64)
            # Megatron's per-token path: the schedule sums these counts and finalize_model_grads divides.
            return total, count.to(torch.int), {}

        return reduce

    seq, mbs = micro[0]["tokens"].shape[1], micro[0]["tokens"].shape[0]
    if any(tuple(mb["tokens"].shape) != (mbs, seq) for mb in micro):
        raise FrontloadError("pipeline-parallel training needs micro batches of one shape (stages pre-allocate them)")
    with compat.cuda_as_cpu():
        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=batches,
            model=[model],
            num_microbatches=len(micro),
            seq_length=seq,
            micro_batch_size=mbs,
            forward_only=False,
        )
    if not parallel_state.is_pipeline_last_stage():
        loss_sum.zero_()
        units.zero_()
    return loss_sum, units


def broadcast_from_last_stage(values: torch.Tensor) -> torch.Tensor:
    """``values`` of the last pipeline stage on every stage of this pipeline (in place)."""
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.broadcast(
            values,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
    return values
