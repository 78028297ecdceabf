"""Pretraining: train a fresh Llama-style model on the pretraining stages of a mix plan.

``pretrain(config)`` plans the mix (or reads a written plan), builds the phase's dataset with
:func:`frontload.corpus.mix.build_phase_dataset` (Megatron-core ``GPTDataset``/``BlendedDataset``,
stages concatenated in order), and runs the shared training loop with next-token cross entropy.
Invariants: rerunning the same command on the same run folder resumes from its newest checkpoint
(consumed samples → next dataset index) and, once finished, returns the final checkpoint without
training again; the checkpoint records the pretraining mix plan's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from frontload.core.config import as_dict
from frontload.train.loop import PhaseConfig, run_phase, token_loss
from frontload.train.model import ModelConfig


@dataclass(kw_only=True)
class PretrainConfig(PhaseConfig):
    """A pretraining run: the phase settings plus the model to build."""

    model: ModelConfig = field(default_factory=ModelConfig)  # the model trained from scratch (or init_from)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        super().__post_init__()


def pretrain(config: PretrainConfig) -> Path:
    """Pretrain (or resume pretraining) and return the final checkpoint folder."""
    return run_phase(
        config, phase="pretrain", model_config=config.model, config_dict=as_dict(config), loss_fn=token_loss
    )
