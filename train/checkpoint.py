"""Checkpoints: one folder per checkpoint, complete or absent, that a phase resumes from or hands on.

Layout of ``RUN/checkpoints/step_<NNNNNNNN>/``::

    meta.json                    # phase, step, consumed_samples, mix_plan_fingerprint, parent, model,
                                 # tokenizer_fingerprint, consumed_by_source, world layout, loop state
    model_tp<T>_pp<P>.pt         # weights of one model-parallel shard (plain GPTModel state dict)
    optim_tp<T>_pp<P>.pt         # optimizer state (identical on every data-parallel rank, written once)
    scheduler.pt                 # Megatron OptimizerParamScheduler state
    rng_rank<R>.pt               # python, numpy, torch (CPU and CUDA) and Megatron tracker RNG states
    tokenizer/                   # a copy of the tokenizer dir, so a checkpoint is self-contained

Invariants: every rank writes into the same temporary folder, rank 0 writes ``meta.json`` last and
renames the folder into place, so a reader never sees a partial checkpoint (a killed save leaves only
a ``.tmp`` folder, which the next save removes). The chain pretrain → sft → rl is visible through
``meta["parent"]``.

Integrity: ``meta["sha256"]`` holds the sha256 of every other file. Every load (eval, export,
resume, the next phase) checks the files it reads against it first, so flipped bytes or a truncated
file is one :class:`CheckpointError` naming the file and what to do, never garbage weights or a
traceback. Every file is plain data (tensors, dicts, lists, numbers, strings) and is read with
``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frontload.core.atomic import atomic_folder
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write_json
from frontload.train import compat
from frontload.train.model import ModelConfig, model_config_from_dict, replace, unwrap

CHECKPOINTS = "checkpoints"
META = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(FrontloadError):
    """A checkpoint folder is missing, incomplete or does not fit the model it is loaded into."""


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run folder."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def _barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def _ranks() -> tuple[int, int, int, int]:
    """(global rank, tp rank, pp rank, dp rank) of this process; zeros without Megatron groups."""
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 0, 0, 0, 0
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return (
        rank,
        ps.get_tensor_model_parallel_rank(),
        ps.get_pipeline_model_parallel_rank(),
        ps.get_data_parallel_rank(),
    )


def _tp_size() -> int:
    from megatron.core import parallel_state as ps

    return ps.get_tensor_model_parallel_world_size() if ps.model_parallel_is_initialized() else 1


def _pp_size() -> int:
    from megatron.core import parallel_state as ps

    return ps.get_pipeline_model_parallel_world_size() if ps.model_parallel_is_initialized() else 1


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step may draw from, as plain data (``weights_only`` loads it)."""
    from megatron.core import tensor_parallel

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state holds an ndarray; as a tensor it needs no numpy class to unpickle.
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if compat.cuda_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    from megatron.core import tensor_parallel

    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))  # a list after a round trip through JSON-like data
    npy = state["numpy"]
    if isinstance(npy, dict):
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    else:  # a checkpoint written before the state was stored as plain data
        np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
    if "cuda" in state and compat.cuda_available():
        torch.cuda.set_rng_state(state["cuda"])


def file_sha256(path: Path) -> str:
    """The sha256 of one file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    # Cost: sha256 runs at ~1 GB/s per core, so a save or load of a small model (a few MB to a few
    # hundred MB) pays well under a second; a multi-GB checkpoint pays seconds per save, which is
    # small next to writing it. The check catches what nothing else would: weights that load fine
    # but are wrong.
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _advice(ckpt_dir: Path) -> str:
    older = [p for p in list_checkpoints(ckpt_dir.parent.parent) if p.name < ckpt_dir.name]
    if older:
        return (
            f"resume from the previous checkpoint {older[-1].name} (move {ckpt_dir.name} out of "
            f"{ckpt_dir.parent} first) or retrain"
        )
    return f"retrain (move {ckpt_dir} aside first); no earlier checkpoint of this run is complete"


def verify_files(ckpt_dir: str | os.PathLike, meta: dict[str, Any], names: list[str]) -> None:
    """Check files of a checkpoint against the sha256 sums in its meta.json; a mismatch is a :class:`CheckpointError`.

    Checkpoints written before checksums existed (no ``sha256`` in meta) are not checked.
    """
    ckpt_dir = Path(ckpt_dir)
    sums = meta.get("sha256")
    if sums is None:
        return
    for name in names:
        path = ckpt_dir / name
        if name not in sums:
            raise CheckpointError(f"{path}: not in the checkpoint's list of files; {_advice(ckpt_dir)}")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; {_advice(ckpt_dir)}")
        if file_sha256(path) != sums[name]:
            raise CheckpointError(
                f"{path}: damaged (its sha256 differs from the one saved in meta.json); {_advice(ckpt_dir)}"
            )


def _load(ckpt_dir: Path, meta: dict[str, Any], name: str, **kwargs) -> Any:
    """``torch.load`` of one checked checkpoint file, plain data only; failures name the file."""
    verify_files(ckpt_dir, meta, [name])
    path = ckpt_dir / name
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file; the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {first[:200]}); {_advice(ckpt_dir)}") from None


def _model_state(model) -> dict[str, torch.Tensor]:
    # ``_extra_state`` entries hold TE/fp8 metadata, not weights; they differ between CPU and GPU specs.
    return {k: v for k, v in unwrap(model).state_dict().items() if not k.endswith("_extra_state")}


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    model,
    model_config: ModelConfig,
    phase: str,
    step: int,
    consumed_samples: int,
    optimizer=None,
    scheduler=None,
    mix_plan_fingerprint: str | None = None,
    parent: str | os.PathLike | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    tokenizer_fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write a complete checkpoint of ``step`` atomically (call on every rank); returns its folder."""
    from frontload.core.config import as_dict

    final = checkpoint_dir(run_dir, step)
    rank, tp, pp, dp = _ranks()
    # Every rank writes into one known staging folder; rank 0 alone prepares it and renames it into
    # place (replacing the same step saved again by a rerun: the new one is complete).
    staging = final.with_name(f".{final.name}.tmp")
    with atomic_folder(final, replace=True, staging=staging) if rank == 0 else contextlib.nullcontext(staging) as tmp:
        _barrier()
        _write_checkpoint_files(
            tmp,
            rank=rank,
            tp=tp,
            pp=pp,
            dp=dp,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            tokenizer_dir=tokenizer_dir,
        )
        _barrier()
        if rank == 0:
            sums = _checksums(tmp)  # every rank's files are in place after the barrier
            world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            meta = {
                "phase": phase,
                "step": step,
                "consumed_samples": consumed_samples,
                "mix_plan_fingerprint": mix_plan_fingerprint,
                "parent": str(parent) if parent is not None else None,
                "model": as_dict(model_config),
                "tokenizer_fingerprint": tokenizer_fingerprint,
                "world_size": world,
                "tp": model_config.tp,
                "pp": model_config.pp,
                **(extra or {}),
                "sha256": sums,
            }
            atomic_write_json(tmp / META, meta)
    if rank == 0 and keep_last:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _write_checkpoint_files(tmp: Path, *, rank, tp, pp, dp, model, optimizer, scheduler, tokenizer_dir) -> None:
    if dp == 0:
        torch.save(_model_state(model), tmp / f"model_tp{tp}_pp{pp}.pt")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / f"optim_tp{tp}_pp{pp}.pt")
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if tokenizer_dir is not None:
            src = Path(tokenizer_dir)
            if src.is_dir():
                shutil.copytree(src, tmp / "tokenizer")
            else:
                (tmp / "tokenizer").mkdir()
                shutil.copy2(src, tmp / "tokenizer" / src.name)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / META).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_meta(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``meta.json``; a missing or broken one is a :class:`CheckpointError` naming the file."""
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint metadata (is {ckpt_dir} a complete frontload checkpoint?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    model,
    optimizer=None,
    scheduler=None,
    load_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and optimizer, scheduler, RNG states when given) into live objects; returns meta."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    rank, tp, pp, _ = _ranks()
    weights = ckpt_dir / f"model_tp{tp}_pp{pp}.pt"
    target = unwrap(model)
    src_pp, pp_size = int(meta.get("pp") or 1), _pp_size()
    if src_pp != pp_size and int(meta.get("tp") or 1) == _tp_size():
        # Another pipeline split: cut this stage's layers out of the checkpoint's stage files.
        layers = int(meta["model"]["layers"])
        keys = set(_model_state(target))
        state = restage(
            ckpt_dir,
            tp=tp,
            src_pp=src_pp,
            layers=layers,
            pp_rank=pp,
            pp_size=pp_size,
            keys=keys,
            load=lambda name: _load(ckpt_dir, meta, name, map_location=compat.device()),
        )
    elif not weights.is_file():
        raise CheckpointError(
            f"{weights}: missing; the checkpoint was written with tp={meta.get('tp')} pp={meta.get('pp')}"
        )
    else:
        state = _load(ckpt_dir, meta, weights.name, map_location=compat.device())
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if optimizer is not None:
        name = f"optim_tp{tp}_pp{pp}.pt"
        if not (ckpt_dir / name).is_file():
            raise CheckpointError(f"{ckpt_dir / name}: missing optimizer state")
        optim_state = _load(ckpt_dir, meta, name, map_location=compat.device())
        with compat.cuda_as_cpu():
            optimizer.load_state_dict(optim_state)
    if scheduler is not None and (ckpt_dir / "scheduler.pt").is_file():
        scheduler.load_state_dict(_load(ckpt_dir, meta, "scheduler.pt"))
    if load_rng:
        name = f"rng_rank{rank}.pt"
        if (ckpt_dir / name).is_file():
            set_rng_state(_load(ckpt_dir, meta, name))
    return meta


def load_model(ckpt_dir: str | os.PathLike, *, seed: int | None = None):
    """Build the model a checkpoint describes and load its weights: ``(model, ModelConfig, meta)``.

    Initialises a single-process runtime when none is running; an initialised process keeps its
    RNG states unless ``seed`` is given. The model is in eval mode.
    """
    from frontload.train.runtime import init_distributed

    meta = read_meta(ckpt_dir)
    # Eval and export also read the tokenizer copy: check it with the weights.
    verify_files(ckpt_dir, meta, [n for n in meta.get("sha256", {}) if n.startswith("tokenizer/")])
    cfg = model_config_from_dict(meta["model"], where=f"{Path(ckpt_dir) / META}: model")
    # Sampling, evaluation and export run the whole model in one stage: a pipelined checkpoint is gathered.
    cfg = replace(cfg, pp=1)
    init_distributed(tp=cfg.tp, pp=cfg.pp, seed=seed)
    model = cfg.build()
    load_checkpoint(ckpt_dir, model=model, load_rng=False)
    model.eval()
    return model, cfg, meta


def tokenizer_path(ckpt_dir: str | os.PathLike) -> Path:
    """The tokenizer copy inside a checkpoint."""
    path = Path(ckpt_dir) / "tokenizer"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint holds no tokenizer copy")
    return path


# A decoder layer's state-dict key: its index within the stage and the rest of the key.
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")


def restage(
    ckpt_dir: str | Path,
    *,
    tp: int,
    src_pp: int,
    layers: int,
    pp_rank: int,
    pp_size: int,
    keys: set[str],
    load,
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
        stage = load(path.name)
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
