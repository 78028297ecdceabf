"""The RL phase end to end on a tiny SFT'd model: rewards per step, rollouts, checkpoints, exact resume."""

import json
import random

import pytest
import torch

from frontload.core.chat import render_example
from frontload.core.config import ConfigError, from_mapping
from frontload.core.events import read_events
from frontload.train.checkpoint import latest_checkpoint, load_model, read_meta, save_checkpoint
from frontload.train.model import forward
from frontload.train.rl import RLConfig, reference_fingerprint, rl
from frontload.train.runtime import init_distributed


def _addition(a: int, b: int):
    return render_example(f"What is {a} + {b}?", None, str(a + b))


@pytest.fixture(scope="module")
def sft_checkpoint(tiny_tokenizer, tiny_model_config, tmp_path_factory):
    """A tiny model taught the answer format on one-digit additions (about a sixth of its answers are right)."""
    init_distributed(seed=0)
    model = tiny_model_config.build()
    tok = tiny_tokenizer
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        pairs = [_addition(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(16)]
        enc = [(tok.encode(p), tok.encode(r)) for p, r in pairs]
        width = max(len(p) + len(r) for p, r in enc)
        tokens = torch.full((len(enc), width), tok.pad_id)
        mask = torch.zeros(len(enc), width)
        for i, (p, r) in enumerate(enc):
            tokens[i, : len(p) + len(r)] = torch.tensor(p + r)
            mask[i, len(p) - 1 : len(p) + len(r) - 1] = 1
        losses = forward(model, tokens, labels=torch.roll(tokens, -1, 1))
        opt.zero_grad()
        ((losses * mask).sum() / mask.sum()).backward()
        opt.step()
    run = tmp_path_factory.mktemp("sft_run")
    return save_checkpoint(
        run,
        model=model,
        model_config=tiny_model_config,
        phase="sft",
        step=150,
        consumed_samples=2400,
        tokenizer_dir=tok.path,
        tokenizer_fingerprint=tok.fingerprint,
    )


@pytest.fixture(scope="module")
def rl_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl_set") / "additions.jsonl"
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(10) for b in range(0, 10, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(run_dir, sft_checkpoint, rl_set, **kw):
    base = dict(
        run_dir=str(run_dir),
        init_from=str(sft_checkpoint),
        prompts=str(rl_set),
        steps=3,
        prompts_per_step=4,
        group_size=4,
        max_new_tokens=20,
        minibatches=2,
        micro_batch=8,
        loss={"kl_coef": 0.05},
        optim={"lr": 3e-4, "min_lr": 3e-4},
        seed=7,
        progress=False,
    )
    base.update(kw)
    return from_mapping(RLConfig, base, where="rl.toml")


def _metrics(run_dir):
    records, bad = read_events(run_dir / "events" / "metrics.rank0.jsonl")
    assert bad == 0
    return records


def test_rl_logs_rewards_and_rollouts_and_hands_on_a_checkpoint(sft_checkpoint, rl_set, tmp_path):
    run_dir = tmp_path / "rl"
    ckpt = rl(_config(run_dir, sft_checkpoint, rl_set, steps=2))
    meta = read_meta(ckpt)
    assert meta["phase"] == "rl" and meta["parent"] == str(sft_checkpoint)
    assert meta["step"] == 4 and meta["rl_step"] == 2  # 2 GRPO steps x 2 minibatches
    assert meta["reference_fingerprint"] == reference_fingerprint(sft_checkpoint)

    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and [m["rl_step"] for m in metrics] == [1, 1, 2, 2]
    for key in ("reward_mean", "reward_std", "accuracy", "kl", "clip_frac", "zero_variance_groups", "verifier_errors"):
        assert all(key in m for m in metrics), key
    assert all(m["verifier_errors"] == 0 for m in metrics)
    # the SFT model is right sometimes, so some groups disagree and the policy is pushed somewhere
    assert any(m["zero_variance_groups"] < 4 for m in metrics)
    # flat groups are left out of the optimiser steps (unless every group is flat)
    assert all(m["trained_sequences"] == ((4 - m["zero_variance_groups"]) * 4 or 16) for m in metrics)
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first update starts at the reference
    assert metrics[-1]["kl"] > 0

    rollouts, _ = read_events(run_dir / "events" / "rollouts.rank0.jsonl")
    assert len(rollouts) == 2 * 4 * 4
    r = rollouts[0]
    assert {"step", "prompt_id", "prompt", "completion", "reward", "verdict", "length", "finish_reason"} <= set(r)
    assert r["prompt"].startswith("<|user|>\nWhat is ")
    correct = [x for x in rollouts if x["verdict"] == "correct"]
    assert correct and all(x["reward"] == 1.0 and x["prediction"] == x["gold"] for x in correct)

    model, cfg, _ = load_model(ckpt)
    ref, _, _ = load_model(sft_checkpoint)
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    assert changed
    # the evaluation stage scores an RL checkpoint like any other
    from frontload.train.evaluate import EvalConfig, TaskSpec, evaluate

    results = evaluate(ckpt, [TaskSpec(path=str(rl_set), limit=4)], EvalConfig(max_new_tokens=20, progress=False))
    result = next(r for r in results if r.metric == "accuracy")
    assert result.n_questions == 4 and {r.metric for r in results} >= {"accuracy", "answer_nll"}
    # rerunning a finished run trains nothing more and returns the same checkpoint
    assert rl(_config(run_dir, sft_checkpoint, rl_set, steps=2)) == ckpt
    assert len(_metrics(run_dir)) == 4


def test_killed_and_resumed_run_logs_the_same_metrics(sft_checkpoint, rl_set, tmp_path):
    straight = tmp_path / "straight"
    rl(_config(straight, sft_checkpoint, rl_set, save_every=1))
    resumed = tmp_path / "resumed"
    rl(_config(resumed, sft_checkpoint, rl_set, save_every=1, exit_after=2))
    # as if killed after step 2's events were written but before its checkpoint was renamed into place
    import shutil

    shutil.rmtree(latest_checkpoint(resumed))
    rl(_config(resumed, sft_checkpoint, rl_set, save_every=1))

    keys = ("loss", "grad_norm", "reward_mean", "accuracy", "kl", "clip_frac", "zero_variance_groups", "lr")
    last = {m["step"]: m for m in _metrics(resumed)}  # a redone step's second record wins
    want = _metrics(straight)
    assert sorted(last) == [m["step"] for m in want] == list(range(1, 7))
    for m in want:
        assert {k: last[m["step"]][k] for k in keys} == {k: m[k] for k in keys}, m["step"]
    a, _ = read_events(straight / "events" / "rollouts.rank0.jsonl")
    b, _ = read_events(resumed / "events" / "rollouts.rank0.jsonl")
    assert [x["completion"] for x in a] == [x["completion"] for x in b if x["seq"] not in range(16, 32)]
    assert read_meta(latest_checkpoint(resumed))["rl_step"] == 3


def test_resume_refuses_a_changed_reference(sft_checkpoint, rl_set, tmp_path):
    run_dir = tmp_path / "rl"
    rl(_config(run_dir, sft_checkpoint, rl_set, steps=2, exit_after=1, save_every=1))
    other = tmp_path / "other_set.jsonl"
    other.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    with pytest.raises(ConfigError, match="prompts"):
        rl(_config(run_dir, sft_checkpoint, other, steps=2))


def test_config_errors_name_the_field(sft_checkpoint, rl_set, tmp_path):
    with pytest.raises(ConfigError, match=r"rl.toml.group_size"):
        _config(tmp_path, sft_checkpoint, rl_set, group_size=1)
    with pytest.raises(ConfigError, match=r"rl.toml.rollout_backend"):
        _config(tmp_path, sft_checkpoint, rl_set, rollout_backend="sglang")
    with pytest.raises(ConfigError, match=r"loss.eps_low"):
        _config(tmp_path, sft_checkpoint, rl_set, loss={"eps_low": 1.5})
    with pytest.raises(ConfigError, match=r"rl.toml.reward.mode"):
        _config(tmp_path, sft_checkpoint, rl_set, reward={"mode": "fuzzy"})
    with pytest.raises(ConfigError, match=r"rl.toml.optim.lr"):
        _config(tmp_path, sft_checkpoint, rl_set, optim={"lr": -1.0})
    # a lone lr is the constant rate (the default min_lr would otherwise exceed a small lr)
    assert _config(tmp_path, sft_checkpoint, rl_set, optim={"lr": 5e-6}).optim.min_lr == 5e-6
    with pytest.raises(ConfigError, match=r"rl.toml.prompt_weights.other"):
        _config(tmp_path, sft_checkpoint, rl_set, prompts={"add": str(rl_set)}, prompt_weights={"other": 1.0})
    with pytest.raises(ConfigError, match=r"rl.toml.loss.kl"):
        _config(tmp_path, sft_checkpoint, rl_set, loss={"kl": 0.1})


def test_cli_runs_rl_from_a_toml_file(sft_checkpoint, rl_set, tmp_path, capsys):
    from frontload.cli import main

    cfg = tmp_path / "rl.toml"
    cfg.write_text(
        f'init_from = "{sft_checkpoint}"\nprompts = "{rl_set}"\nprompts_per_step = 2\ngroup_size = 2\n'
        "max_new_tokens = 20\nminibatches = 1\n[optim]\nlr = 1e-4\n"
    )
    assert main(["train", "rl", str(cfg), "--run-dir", str(tmp_path / "run"), "--steps", "1", "--no-progress"]) == 0
    assert read_meta(latest_checkpoint(tmp_path / "run"))["phase"] == "rl"
    assert main(["train", "rl", str(cfg), "--run-dir", str(tmp_path / "run2"), "--group-size", "1"]) == 2
    assert "group_size" in capsys.readouterr().err


def test_minibatches_split_the_kept_rows_and_reshuffle_per_epoch(tmp_path, sft_checkpoint, rl_set):
    from frontload.train.rollouts import GRPOBatches, Rollout

    cfg = _config(tmp_path, sft_checkpoint, rl_set, minibatches=2, epochs=2)
    source = GRPOBatches(config=cfg, state=None, tokenizer=None, prompts={}, run=None)
    rollout = Rollout(
        rl_step=3,
        prompts=[],
        completions=[],
        rewards=[],
        tensors={},
        lengths=[],
        train_rows=[0, 1, 2, 3, 8, 9, 10, 11],
        stats={},
    )
    parts = [source.minibatch_rows(rollout, u) for u in range(4)]
    for epoch in (parts[:2], parts[2:]):
        assert sorted(epoch[0] + epoch[1]) == rollout.train_rows and len(epoch[0]) == 4
    assert parts[:2] != parts[2:]  # a second pass visits the rows in another order
    rollout.train_rows = [5]
    assert source.minibatch_rows(rollout, 0) == source.minibatch_rows(rollout, 1) == [5]


def test_a_mix_of_named_prompt_sets(sft_checkpoint, rl_set, tmp_path):
    from frontload.train.prompts import PromptMix

    mix = PromptMix({"a": 5, "b": 3}, {"a": 3.0, "b": 1.0}, seed=1)
    slots = mix.indices(0, 16)
    assert [n for n, _ in slots].count("a") == 12  # 3 : 1
    assert sorted([i for n, i in slots if n == "a"][:5]) == [0, 1, 2, 3, 4]  # each set in its own epochs
    assert PromptMix({"a": 5, "b": 3}, {"a": 3.0, "b": 1.0}, seed=1).indices(9, 7) == slots[9:]  # resumable
    assert [n for n, _ in PromptMix({"a": 6, "b": 2}, {}, seed=1).indices(0, 8)].count("b") == 2  # by size

    other = tmp_path / "doubles.jsonl"
    other.write_text(
        "".join(json.dumps({"question": f"What is {a} + {a}?", "answer": str(2 * a)}) + "\n" for a in range(5))
    )
    run_dir = tmp_path / "rl"
    rl(
        _config(
            run_dir,
            sft_checkpoint,
            rl_set,
            steps=1,
            minibatches=1,
            prompts={"sums": str(rl_set), "doubles": str(other)},
            prompt_weights={"sums": 1.0, "doubles": 1.0},
            loss={"skip_zero_variance": False},  # every rollout trains, so the counts show the 1 : 1 mix
        )
    )
    (m,) = _metrics(run_dir)
    assert m["consumed_by_source"] == {"doubles": 8, "sums": 8}


@pytest.mark.distributed
def test_two_ranks_sample_score_and_update_like_one_rank(sft_checkpoint, rl_set, tmp_path):
    """Under torchrun each rank samples half of each step's prompts; the run equals the one-rank run."""
    import os
    import subprocess
    import sys

    one = tmp_path / "one"
    rl(_config(one, sft_checkpoint, rl_set))
    two = tmp_path / "two"
    toml = tmp_path / "two.toml"
    toml.write_text(
        f'run_dir = "{two}"\ninit_from = "{sft_checkpoint}"\nprompts = "{rl_set}"\nsteps = 3\n'
        "prompts_per_step = 4\ngroup_size = 4\nmax_new_tokens = 20\nminibatches = 2\nmicro_batch = 8\n"
        "seed = 7\nprogress = false\n[loss]\nkl_coef = 0.05\n[optim]\nlr = 3e-4\nmin_lr = 3e-4\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "frontload", "train", "rl", str(toml)]
    for extra in (["--exit-after", "2"], []):  # stopped after 2 GRPO steps, then resumed
        done = subprocess.run(cmd + extra, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]

    def rollouts(run_dir):
        rows = [r for f in sorted((run_dir / "events").glob("rollouts.rank*.jsonl")) for r in read_events(f)[0]]
        return sorted(
            (r["step"], r["prompt_id"], r["sample"], r["completion"], r["reward"], r["advantage"]) for r in rows
        )

    ref, got = rollouts(one), rollouts(two)
    assert len(ref) == 3 * 4 * 4 and [r[:5] for r in got] == [r[:5] for r in ref]  # same completions and rewards
    assert [r[5] for r in got] == pytest.approx([r[5] for r in ref], abs=1e-6)
    # Only rank 0 wrote half of them: each rank sampled its own share.
    assert 0 < len(read_events(two / "events" / "rollouts.rank0.jsonl")[0]) < len(ref)

    a, b = _metrics(one), _metrics(two)
    assert [m["step"] for m in b] == [m["step"] for m in a] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a, b):
        for key in ("reward_mean", "reward_std", "accuracy", "zero_variance_groups", "trained_sequences"):
            assert y[key] == x[key], key  # global, not rank 0's half
        assert y["loss_units"] == x["loss_units"]
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-7)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
        for key in ("clip_frac", "kl", "ratio_mean"):  # token means over the whole step, whatever the split
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-7), key
    w1 = torch.load(latest_checkpoint(one) / "model_tp0_pp0.pt", weights_only=True)
    w2 = torch.load(latest_checkpoint(two) / "model_tp0_pp0.pt", weights_only=True)
    # Adam's update is about lr * sign(grad) where a gradient is near zero, so float-order noise there
    # moves a weight by up to a few 1e-6; six updates at lr 3e-4 move weights by up to 2e-3.
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=2e-5)
