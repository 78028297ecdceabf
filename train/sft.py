"""Supervised fine-tuning: continue a pretraining checkpoint on chat-formatted reasoning examples.

SFT shard sets (contract 3, ``sft: true``) carry a uint8 loss mask beside the tokens, one on the
response tokens (what follows ``<|assistant|>``, through ``<|end|>``) and zero on the prompt. The
mix plan's SFT stages read them with Megatron-core's ``GPTDataset``, which packs whole examples
back to back into ``seq_len`` windows; the loss is the same next-token cross entropy as
pretraining, counted only where the mask is one. So the loop is the pretraining loop and only
the data differs.

Invariants: the model shape comes from the parent checkpoint (never from the SFT config), the
parent is recorded in every SFT checkpoint's ``meta.json``, and the tokenizer defaults to the copy
inside the parent checkpoint, so a pretrain → sft chain cannot silently switch tokenizers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from frontload.core.config import ConfigError, as_dict
from frontload.train.checkpoint import read_meta
from frontload.train.loop import PhaseConfig, resolve_checkpoint, run_phase, token_loss
from frontload.train.model import model_config_from_dict, replace
from frontload.train.optim import OptimConfig


def _sft_optim() -> OptimConfig:
    # Fine-tuning moves a trained model: a lower peak rate and a short warmup are the usual choice.
    return OptimConfig(lr=3e-4, min_lr=3e-5, warmup_steps=0, weight_decay=0.0)


@dataclass(kw_only=True)
class SFTConfig(PhaseConfig):
    """An SFT run: the phase settings; ``init_from`` (a pretraining checkpoint or run folder) is required."""

    optim: OptimConfig = field(default_factory=_sft_optim)  # AdamW and schedule (lower lr than pretraining)
    pp: int | None = None  # pipeline stages for this phase; None = the parent checkpoint's

    def __post_init__(self) -> None:
        if self.init_from is None:
            raise ConfigError("init_from", "SFT starts from a pretraining checkpoint (or its run folder)")
        if self.pp is not None and self.pp < 1:
            raise ConfigError("pp", f"must be >= 1, got {self.pp}")
        super().__post_init__()


def sft(config: SFTConfig) -> Path:
    """Fine-tune (or resume fine-tuning) from ``config.init_from``; returns the final checkpoint folder."""
    parent = resolve_checkpoint(config.init_from)
    meta = read_meta(parent)
    model_config = model_config_from_dict(meta["model"], where=f"{parent / 'meta.json'}: model")
    if config.pp is not None:
        # The shape stays the parent's; only the split over pipeline stages changes (weights are restaged).
        model_config = replace(model_config, pp=config.pp)
    if config.tokenizer is None and (parent / "tokenizer").exists():
        config.tokenizer = str(parent / "tokenizer")
    return run_phase(config, phase="sft", model_config=model_config, config_dict=as_dict(config), loss_fn=token_loss)
