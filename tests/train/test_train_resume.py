"""Exact resume: killed after a checkpoint and rerun, training repeats nothing, skips nothing, and its
losses and weights are bitwise those of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_data import write_config

from frontload.cli import main
from frontload.core.config import as_dict
from frontload.core.events import read_events
from frontload.corpus.mix import MixSchedule, MixStage
from frontload.train.checkpoint import list_checkpoints, read_meta
from frontload.train.loop import run_phase
from frontload.train.optim import OptimConfig
from frontload.train.pretrain import PretrainConfig, pretrain


class Killed(Exception):
    pass


def config(run_dir, shard_sets, model_config, tokenizer):
    return PretrainConfig(
        run_dir=str(run_dir),
        model=model_config,
        tokenizer=str(tokenizer.path),
        shards={"web": str(shard_sets["web"]), "reasoning": str(shard_sets["reasoning"])},
        mix=MixSchedule(pretrain=[MixStage(samples=48, blend={"web": 0.7, "reasoning": 0.3})]),
        optim=OptimConfig(lr=3e-3, warmup_steps=2, schedule="wsd"),
        global_batch=8,
        micro_batch=2,
        save_every=3,
        progress=False,
    )


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path, shard_sets, tiny_model_config, tiny_tokenizer):
    straight = pretrain(config(tmp_path / "a", shard_sets, tiny_model_config, tiny_tokenizer))
    reference = read_events(tmp_path / "a" / "events" / "metrics.rank0.jsonl")[0]
    assert [r["step"] for r in reference] == [1, 2, 3, 4, 5, 6]

    cfg = config(tmp_path / "b", shard_sets, tiny_model_config, tiny_tokenizer)

    def kill_at_step_5(state, record):
        if state.step == 5:
            raise Killed  # dies after step 5's update, before its checkpoint would exist

    with pytest.raises(Killed):
        run_phase(cfg, phase="pretrain", model_config=cfg.model, config_dict=as_dict(cfg), on_step=kill_at_step_5)
    assert [read_meta(p)["step"] for p in list_checkpoints(tmp_path / "b")] == [3]
    resumed = pretrain(cfg)

    events = read_events(tmp_path / "b" / "events" / "metrics.rank0.jsonl")[0]
    first, second = events[:4], events[4:]  # the killed attempt logged steps 1-4; step 5 died before logging
    assert [r["step"] for r in first] == [1, 2, 3, 4] and [r["step"] for r in second] == [4, 5, 6]
    for r in events:
        ref = reference[r["step"] - 1]
        assert r["loss"] == ref["loss"], r["step"]  # bitwise, not approximately
        assert r["grad_norm"] == ref["grad_norm"] and r["lr"] == ref["lr"]
        assert r["consumed_by_source"] == ref["consumed_by_source"]
    # The resumed attempt read samples 24.. on from where checkpoint 3 stopped: none skipped or repeated.
    assert [r["sample_start"] for r in second] == [24, 32, 40]
    assert second[-1]["consumed_samples"] == 48
    a = torch.load(straight / "model_tp0_pp0.pt")
    b = torch.load(resumed / "model_tp0_pp0.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_not_trained_again(tmp_path, shard_sets, tiny_model_config, tiny_tokenizer):
    cfg = config(tmp_path / "c", shard_sets, tiny_model_config, tiny_tokenizer)
    cfg.exit_after = 2
    assert read_meta(pretrain(cfg))["step"] == 2  # a time-limited job stops after 2 steps, with a checkpoint
    cfg.exit_after = None
    final = pretrain(cfg)
    assert read_meta(final)["step"] == 6
    n_events = len(read_events(tmp_path / "c" / "events" / "metrics.rank0.jsonl")[0])
    assert pretrain(cfg) == final
    assert len(read_events(tmp_path / "c" / "events" / "metrics.rank0.jsonl")[0]) == n_events == 6


def test_sigkilled_process_resumes_where_its_last_checkpoint_stopped(
    tmp_path, shard_sets, tiny_model_config, tiny_tokenizer
):
    """A real ``kill -9`` at an arbitrary moment (possibly inside a checkpoint save) loses nothing."""
    cfg_path = write_config(tmp_path / "k.toml", tmp_path / "k", shard_sets, tiny_tokenizer, tiny_model_config)
    cfg_path.write_text(cfg_path.read_text().replace("samples = 40", "samples = 64") + "\n")
    args = ["train", "pretrain", str(cfg_path), "--save-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "frontload", *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_checkpoints(tmp_path / "k") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = [read_meta(p)["step"] for p in list_checkpoints(tmp_path / "k")]
    assert saved and all(s % 2 == 0 for s in saved)  # only complete checkpoints are visible

    assert main([*args, "--no-progress"]) == 0
    events = read_events(tmp_path / "k" / "events" / "metrics.rank0.jsonl")[0]
    last = max(saved)  # the rerun starts after the newest complete checkpoint
    second = events[len(events) - (8 - last) :]
    assert [r["step"] for r in second] == list(range(last + 1, 9))
    assert [r["sample_start"] for r in second] == list(range(last * 8, 64, 8))  # nothing skipped or repeated
    assert read_meta(list_checkpoints(tmp_path / "k")[-1])["consumed_samples"] == 64

    # The same config run without a kill logs the same losses, bitwise.
    clean = write_config(tmp_path / "c.toml", tmp_path / "clean", shard_sets, tiny_tokenizer, tiny_model_config)
    clean.write_text(clean.read_text().replace("samples = 40", "samples = 64") + "\n")
    assert main(["train", "pretrain", str(clean), "--save-every", "2"]) == 0
    reference = {r["step"]: r["loss"] for r in read_events(tmp_path / "clean" / "events" / "metrics.rank0.jsonl")[0]}
    assert all(r["loss"] == reference[r["step"]] for r in events)
