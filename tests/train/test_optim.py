"""Learning-rate schedules and the optimizer back ends agree on what a step does."""

import pytest
import torch

from frontload.core.config import ConfigError
from frontload.train.model import ModelConfig, forward
from frontload.train.optim import OptimConfig, build_optimizer
from frontload.train.runtime import init_distributed


def lrs(schedule, steps=20, warmup=4):
    init_distributed(seed=0)
    model = ModelConfig(layers=1, hidden=64, heads=2, seq_len=16, vocab_size=64).build()
    opt = build_optimizer(model, OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=warmup, schedule=schedule), steps)
    out = []
    for _ in range(steps):
        out.append(opt.lr)
        opt.scheduler.step(1)
    return out


def test_warmup_then_wsd_holds_the_peak_and_anneals_at_the_end():
    lr = lrs("wsd")
    assert lr[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert all(v == 1.0 for v in lr[4:16])  # stable phase: 80% of the steps
    assert lr[16] > lr[17] > lr[18] > lr[19] > 0.1


def test_cosine_decays_monotonically_to_min_lr():
    lr = lrs("cosine", warmup=0)
    assert lr[0] == 1.0 and all(a >= b for a, b in zip(lr, lr[1:]))
    assert lrs("cosine", steps=20, warmup=0)[-1] == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(19 / 20 * torch.pi)).item())
    )


def test_megatron_and_torch_back_ends_take_the_same_first_step():
    init_distributed(seed=0)
    cfg = ModelConfig(layers=1, hidden=64, heads=2, seq_len=16, vocab_size=64)
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(0))
    after = []
    for backend in ("megatron", "torch"):
        init_distributed(seed=0)
        opt = build_optimizer(cfg.build(), OptimConfig(backend=backend, lr=1e-2, schedule="constant"), 10)
        assert opt.backend == backend
        opt.zero_grad()
        loss = forward(opt.model, tokens[:, :-1], labels=tokens[:, 1:])
        loss.sum().backward()
        opt.step(torch.tensor(float(loss.numel())))
        after.append(forward(opt.model, tokens[:, :-1], labels=tokens[:, 1:]).mean().item())
    assert after[0] == pytest.approx(after[1], rel=1e-5)


def test_bad_optimizer_settings_name_the_field():
    with pytest.raises(ConfigError, match="min_lr"):
        OptimConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ConfigError, match="schedule"):
        from frontload.core.config import from_mapping

        from_mapping(OptimConfig, {"schedule": "step"}, where="optim")
