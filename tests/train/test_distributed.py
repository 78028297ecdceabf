"""Data parallel on CPU: two gloo ranks under torchrun follow one rank's loss curve (same global batch),
and the command line trains from a TOML config."""

import os
import subprocess
import sys

import pytest
from train_data import write_config

from frontload.cli import main
from frontload.core.events import read_events
from frontload.train.checkpoint import read_meta


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_rank(tmp_path, shard_sets, tiny_tokenizer, tiny_model_config, capsys):
    one = write_config(tmp_path / "one.toml", tmp_path / "one", shard_sets, tiny_tokenizer, tiny_model_config)
    assert main(["train", "pretrain", str(one)]) == 0
    final = capsys.readouterr().out.strip().splitlines()[-1]
    assert read_meta(final)["step"] == 5

    two = write_config(tmp_path / "two.toml", tmp_path / "two", shard_sets, tiny_tokenizer, tiny_model_config)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "frontload", "train", "pretrain", str(two)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    ref = read_events(tmp_path / "one" / "events" / "metrics.rank0.jsonl")[0]
    dp = read_events(tmp_path / "two" / "events" / "metrics.rank0.jsonl")[0]
    assert [r["step"] for r in dp] == [r["step"] for r in ref] == [1, 2, 3, 4, 5]
    for a, b in zip(ref, dp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["consumed_by_source"] == a["consumed_by_source"]  # the same samples, split over ranks
    meta = read_meta(tmp_path / "two" / "checkpoints" / "step_00000005")
    assert meta["world_size"] == 2 and meta["consumed_samples"] == 40


def test_cli_reports_a_bad_config_key_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('run_dir = "x"\nlayers = 3\n')
    assert main(["train", "pretrain", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml.layers: unknown key" in err and len(err.strip().splitlines()) == 1


@pytest.mark.distributed
def test_tensor_parallel_setting_reaches_megatron(tmp_path, shard_sets, tiny_tokenizer, tiny_model_config, capsys):
    """tp = 2 under torchrun splits every linear layer over two ranks and follows the tp = 1 curve."""
    one = write_config(tmp_path / "one.toml", tmp_path / "one", shard_sets, tiny_tokenizer, tiny_model_config)
    assert main(["train", "pretrain", str(one), "--steps", "3"]) == 0
    tp = write_config(tmp_path / "tp.toml", tmp_path / "tp", shard_sets, tiny_tokenizer, tiny_model_config)
    tp.write_text(tp.read_text().replace("[model]\n", "[model]\ntp = 2\n"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "frontload", "train", "pretrain", str(tp), "--steps", "3"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = tmp_path / "tp" / "checkpoints" / "step_00000003"
    assert read_meta(ckpt)["tp"] == 2
    assert (ckpt / "model_tp0_pp0.pt").exists() and (ckpt / "model_tp1_pp0.pt").exists()
    ref = read_events(tmp_path / "one" / "events" / "metrics.rank0.jsonl")[0]
    got = read_events(tmp_path / "tp" / "events" / "metrics.rank0.jsonl")[0]
    # Same init (Megatron splits a master weight initialised on CPU), so the same curve up to float order.
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
