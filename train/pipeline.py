"""Pipeline-parallel training steps and checkpoint restaging, for models split over ``pp > 1`` stages.

:func:`pipeline_step` runs one optimizer step's micro batches through Megatron-core's pipeline
schedule (``get_forward_backward_func``: 1F1B, activations sent between stages, the loss on the
last stage) with the next-token loss of pretraining and SFT (loss masks included). Like the
one-stage path it returns a loss *sum* and a unit count, so the loop's normalisation (divide by the
global count in ``finalize_model_grads``) is the same whatever the split.

:func:`restage` turns the per-stage weight files of a checkpoint written with one pipeline size
into the state dict of one stage of another (layers renumbered, embeddings and output layer on
the first and last stage), so a ``pp = 1`` checkpoint starts a ``pp = 2`` run and evaluation or
export gathers a ``pp = 2`` checkpoint into one process.

Invariants: on stages other than the last the returned sums are zero (the loop broadcasts the
last stage's figures); a restaged state dict holds exactly the keys of the stage it is for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from frontload.core.errors import FrontloadError
from frontload.train import compat

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")


def pipeline_step(model, micro: Sequence[dict[str, Any]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of ``micro`` through the pipeline; (loss sum, unit count) on the last stage, else 0."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from frontload.train.loop import to_device
    from frontload.train.model import forward

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    units = torch.zeros((), dtype=torch.float64, device=device)
    batches = iter([to_device(mb, device) for mb in micro])

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


def restage(
    ckpt_dir: str | Path,
    *,
    tp: int,
    src_pp: int,
    layers: int,
    pp_rank: int,
    pp_size: int,
    keys: set[str],
    load=None,
) -> dict[str, torch.Tensor]:
    """Stage ``pp_rank`` of ``pp_size`` cut from a checkpoint's ``src_pp`` stage files (tensor-parallel rank ``tp``).

    ``load(name)`` reads one file of the checkpoint (the checkpoint module passes its checksum-checked
    reader); ``keys`` are the state-dict keys of the target stage; layer ``i`` of stage ``p`` is global layer
    ``p * layers / pp`` + ``i`` (Megatron's even split). A tied output layer on a last stage that holds
    no embedding takes the first stage's embedding, as Megatron's embedding group keeps them equal.
    """
    ckpt_dir = Path(ckpt_dir)
    merged: dict[str, torch.Tensor] = {}
    for p in range(src_pp):
        path = ckpt_dir / f"model_tp{tp}_pp{p}.pt"
        if not path.is_file():
            raise FrontloadError(f"{path}: missing; the checkpoint's pipeline stages are incomplete")
        stage = load(path.name) if load else torch.load(path, map_location=compat.device(), weights_only=True)
        for key, value in stage.items():
            m = _LAYER.match(key)
            if m:
                key = f"decoder.layers.{p * layers // src_pp + int(m.group(1))}.{m.group(2)}"
            merged.setdefault(key, value)
    first = pp_rank * layers // pp_size
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        m = _LAYER.match(key)
        source = f"decoder.layers.{first + int(m.group(1))}.{m.group(2)}" if m else key
        if source not in merged and key == "output_layer.weight":
            source = "embedding.word_embeddings.weight"
        if source in merged:
            out[key] = merged[source]
    return out
