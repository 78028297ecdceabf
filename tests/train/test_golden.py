"""Golden losses: the first pretraining steps of a tiny model on a fixed seed must not drift.

A change to the model, the data order, the mix, the optimiser or the loss shows up here as a
different loss curve, even when every other test still passes (torchtitan keeps such curves).
The curve lives in ``tests/train/golden/pretrain_losses.json`` with its tolerance. When a change
is *meant* to shift training, regenerate the file and say why in the commit:

    FRONTLOAD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/train/test_golden.py
"""

import json
import os
import platform
from pathlib import Path

import pytest

from frontload.core.events import read_events
from frontload.corpus.mix import MixSchedule, MixStage
from frontload.train.optim import OptimConfig
from frontload.train.pretrain import PretrainConfig, pretrain

GOLDEN = Path(__file__).parent / "golden" / "pretrain_losses.json"
STEPS = 10
UPDATE = os.environ.get("FRONTLOAD_UPDATE_GOLDEN") == "1"


def _versions() -> dict[str, str]:
    import importlib.metadata

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "megatron-core": importlib.metadata.version("megatron-core"),
        "sentencepiece": importlib.metadata.version("sentencepiece"),
    }


def test_first_pretraining_losses_match_the_golden_curve(shard_sets, tiny_tokenizer, tiny_model_config, tmp_path):
    run_dir = tmp_path / "run"
    cfg = PretrainConfig(
        run_dir=str(run_dir),
        model=tiny_model_config,  # 2 layers, hidden 64, seq_len 64
        tokenizer=str(tiny_tokenizer.path),
        shards={k: str(v) for k, v in shard_sets.items() if k != "hq"},
        mix=MixSchedule(pretrain=[MixStage(samples=8 * STEPS, blend={"web": 0.5, "reasoning": 0.5})]),
        optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=4),
        global_batch=8,
        micro_batch=4,
        seed=1234,
        progress=False,
    )
    pretrain(cfg)
    records = read_events(run_dir / "events" / "metrics.rank0.jsonl")[0]
    losses = [r["loss"] for r in records]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    if UPDATE:
        GOLDEN.write_text(
            json.dumps(
                {
                    "what": "pretraining loss per optimizer step; tests/train/test_golden.py",
                    "regenerate": "FRONTLOAD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/train/test_golden.py",
                    "tolerance": {"abs": 1e-3},
                    "made_with": _versions(),
                    "losses": losses,
                },
                indent=2,
            )
            + "\n"
        )
    golden = json.loads(GOLDEN.read_text())
    tol = golden["tolerance"]["abs"]
    assert losses == pytest.approx(golden["losses"], abs=tol), (
        f"the loss curve drifted from {GOLDEN.name} (made with {golden['made_with']}, this run: {_versions()}); "
        f"if the change is meant to shift training, regenerate it: {golden['regenerate']}"
    )
