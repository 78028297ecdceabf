"""Run Megatron-core on a machine without CUDA: a few narrow patches, active only when CUDA is absent.

Megatron-core assumes a GPU in a handful of places. On CPU this module

* replaces ``CudaRNGStatesTracker`` with :class:`CPURNGStatesTracker`, which tracks named CPU
  generator states (every transformer forward forks the tracker, so it cannot just be skipped);
* makes ``torch.cuda.current_device()`` return ``"cpu"``, which also puts Megatron's
  ``GlobalMemoryBuffer``, RoPE frequencies and grad buffers on the CPU;
* makes ``torch.cuda.synchronize`` a no-op;
* offers :func:`cuda_as_cpu`, a ``TorchFunctionMode`` that maps ``device="cuda"`` and
  ``Tensor.cuda()`` to the CPU (and reports CPU tensor type names as their CUDA names, which
  Megatron's grad clipping asserts on), for the code paths that hard-code ``"cuda"`` (Megatron's optimizer
  construction and ``step()``, its grad-norm helpers, the inference engine).

Invariants: :func:`install` is idempotent and does nothing when CUDA is available, so the same code
runs unchanged on GPUs; the patches never change numerics. Attention masks on CPU are always a
bool ``[1, 1, s, s]`` tensor with True = masked (:func:`causal_mask`), because the local spec's
unfused softmax path expects one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_INSTALLED = False

# Megatron-core warns on import about optional GPU kernels (apex, Transformer Engine) that a CPU run
# never needs; the fallbacks it names are the ones we want.
for _message in (
    "Apex is not installed",
    "Transformer Engine and Apex are not installed",
    "full scope is deprecated",
):
    warnings.filterwarnings("ignore", message=_message)


def cuda_available() -> bool:
    """True when a CUDA device is present (and then nothing here is patched)."""
    return torch.cuda.is_available()


def device() -> torch.device:
    """The device the trainer runs on: the current CUDA device, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if cuda_available() else torch.device("cpu")


class CPURNGStatesTracker:
    """Megatron's named-RNG-state tracker, holding CPU generator states instead of CUDA ones.

    ``fork(name)`` swaps the named state into torch's CPU generator for the block and stores the
    advanced state back afterwards, exactly as Megatron's tracker does for the CUDA generator.
    """

    def __init__(self, use_cudagraphable_rng: bool = False, is_inference_rng_tracker: bool = False) -> None:
        self.use_cudagraphable_rng = False
        self.is_inference_rng_tracker = is_inference_rng_tracker
        self.reset()

    def is_initialized(self) -> bool:
        return self._is_initialized

    def reset(self) -> None:
        self._is_initialized = False
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise RuntimeError(f"seed {seed} already exists")
        if name in self.states_:
            raise RuntimeError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        generator = torch.Generator()
        generator.manual_seed(seed)
        self.states_[name] = generator.get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
        if name not in self.states_:
            raise RuntimeError(f"rng state {name} is not added")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


class _CudaAsCpu(TorchFunctionMode):
    """Rewrites ``device="cuda"`` keyword arguments and ``.cuda()`` calls to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Megatron's grad clipping asserts ``grad.type() == "torch.cuda.FloatTensor"``.
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        dev = kwargs.get("device")
        if dev is not None and _is_cuda(dev):
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to and args and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _is_cuda(dev: Any) -> bool:
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    return isinstance(dev, str) and dev.startswith("cuda")


@contextlib.contextmanager
def cuda_as_cpu() -> Iterator[None]:
    """Within the block, code that hard-codes ``device="cuda"`` allocates on the CPU (no-op with CUDA)."""
    if cuda_available():
        yield
        return
    with _CudaAsCpu():
        yield


def install() -> None:
    """Apply the CPU patches once per process; does nothing when CUDA is available."""
    global _INSTALLED
    if _INSTALLED or cuda_available():
        return
    from megatron.core.tensor_parallel import random as mrandom

    # Megatron looks the class up by module global at tracker creation and in isinstance checks,
    # so replacing the module attribute swaps the tracker everywhere.
    mrandom.CudaRNGStatesTracker = CPURNGStatesTracker
    mrandom.initialize_rng_tracker(force_reset=True)
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *a, **k: None
    # Seeding "cuda" must not try to initialise a driver that is not there.
    torch.cuda.manual_seed = lambda seed: None
    torch.cuda.manual_seed_all = lambda seed: None
    _INSTALLED = True


def causal_mask(seq_len: int, dev: torch.device | str | None = None) -> torch.Tensor:
    """Bool causal attention mask ``[1, 1, s, s]``; True marks positions a query must not see."""
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool, device=dev), diagonal=1)[None, None]


def to_device(batch: dict, device) -> dict:
    """The batch with its tensors on ``device`` (a no-op on CPU)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
