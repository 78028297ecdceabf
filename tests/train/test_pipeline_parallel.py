"""Pipeline parallel on CPU: two gloo stages under torchrun follow the one-stage loss curve.

Both runs start from the same pp = 1 checkpoint (a pp = 2 run cuts its stages out of it), so the
curves agree up to float summation order; the pp = 2 run stops half way and resumes from its
per-stage checkpoint files, and evaluation gathers its stages back into one process.
"""

import os
import subprocess
import sys

import pytest
import torch
from train_data import write_config

from frontload.cli import main
from frontload.core.events import read_events
from frontload.train.checkpoint import latest_checkpoint, load_model, read_meta
from frontload.train.model import forward


def torchrun(*args: str, ranks: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    done = subprocess.run([*cmd, "-m", "frontload", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def metrics(run_dir) -> list[dict]:
    return read_events(run_dir / "events" / "metrics.rank0.jsonl")[0]


@pytest.mark.distributed
def test_two_pipeline_stages_match_one_stage_and_resume(tmp_path, shard_sets, tiny_tokenizer, tiny_model_config):
    init = write_config(tmp_path / "init.toml", tmp_path / "init", shard_sets, tiny_tokenizer, tiny_model_config)
    assert main(["train", "pretrain", str(init), "--steps", "1", "--no-progress"]) == 0
    start = latest_checkpoint(tmp_path / "init")

    one = write_config(tmp_path / "one.toml", tmp_path / "one", shard_sets, tiny_tokenizer, tiny_model_config)
    assert main(["train", "pretrain", str(one), "--steps", "4", "--init-from", str(start), "--no-progress"]) == 0

    pp = write_config(tmp_path / "pp.toml", tmp_path / "pp", shard_sets, tiny_tokenizer, tiny_model_config)
    pp.write_text(pp.read_text().replace("[model]\n", "[model]\npp = 2\n"))
    args = ["train", "pretrain", str(pp), "--steps", "4", "--init-from", str(start), "--no-progress"]
    torchrun(*args, "--exit-after", "2")
    half = latest_checkpoint(tmp_path / "pp")
    assert read_meta(half)["step"] == 2 and read_meta(half)["pp"] == 2
    assert (half / "model_tp0_pp0.pt").exists() and (half / "model_tp0_pp1.pt").exists()
    torchrun(*args)  # resumes each stage from its own files

    ref, got = metrics(tmp_path / "one"), metrics(tmp_path / "pp")
    assert len(ref) == len(got) == 4
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in ref], rel=1e-5)
    # The gradient norm is taken over both stages' parameters (Megatron's model-parallel group).
    assert [r["grad_norm"] for r in got] == pytest.approx([r["grad_norm"] for r in ref], rel=1e-4)

    # Evaluation and export load the whole model in one process: the two stages are gathered.
    final = latest_checkpoint(tmp_path / "pp")
    tokens = torch.randint(0, tiny_model_config.vocab_size, (2, tiny_model_config.seq_len))
    whole, cfg, _ = load_model(final)
    assert cfg.pp == 1
    gathered = forward(whole, tokens)
    reference, _, _ = load_model(latest_checkpoint(tmp_path / "one"))
    torch.testing.assert_close(gathered, forward(reference, tokens), rtol=1e-4, atol=1e-4)


def write_sft_config(path, run_dir, shard_sets, parent, pp: int):
    path.write_text(
        f"""
run_dir = "{run_dir}"
init_from = "{parent}"
pp = {pp}
global_batch = 8
micro_batch = 2
progress = false

[shards]
hq = "{shard_sets["hq"]}"

[optim]
lr = 2e-3

[[mix.sft]]
samples = 24
blend = {{ hq = 1.0 }}
"""
    )
    return path


@pytest.mark.distributed
def test_pipelined_sft_counts_only_response_tokens_like_one_stage(
    tmp_path, shard_sets, tiny_tokenizer, tiny_model_config
):
    init = write_config(tmp_path / "init.toml", tmp_path / "init", shard_sets, tiny_tokenizer, tiny_model_config)
    assert main(["train", "pretrain", str(init), "--steps", "1", "--no-progress"]) == 0
    parent = latest_checkpoint(tmp_path / "init")
    assert (
        main(["train", "sft", str(write_sft_config(tmp_path / "one.toml", tmp_path / "one", shard_sets, parent, 1))])
        == 0
    )
    torchrun("train", "sft", str(write_sft_config(tmp_path / "pp.toml", tmp_path / "pp", shard_sets, parent, 2)))

    ref, got = metrics(tmp_path / "one"), metrics(tmp_path / "pp")
    assert len(got) == len(ref) == 3
    for a, b in zip(ref, got):
        assert b["loss_units"] == a["loss_units"] < 8 * tiny_model_config.seq_len  # the prompt is masked
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert read_meta(latest_checkpoint(tmp_path / "pp"))["pp"] == 2


@pytest.mark.distributed
def test_tensor_and_pipeline_parallel_on_four_ranks(tmp_path, shard_sets, tiny_tokenizer, tiny_model_config):
    """tp = 2 x pp = 2: four ranks, each holding half of one stage's weights, train and checkpoint per shard."""
    one = write_config(tmp_path / "one.toml", tmp_path / "one", shard_sets, tiny_tokenizer, tiny_model_config)
    assert main(["train", "pretrain", str(one), "--steps", "2", "--no-progress"]) == 0
    both = write_config(tmp_path / "both.toml", tmp_path / "both", shard_sets, tiny_tokenizer, tiny_model_config)
    both.write_text(both.read_text().replace("[model]\n", "[model]\ntp = 2\npp = 2\n"))
    torchrun("train", "pretrain", str(both), "--steps", "2", "--no-progress", ranks=4)
    ckpt = latest_checkpoint(tmp_path / "both")
    assert sorted(p.name for p in ckpt.glob("model_*.pt")) == sorted(
        f"model_tp{t}_pp{p}.pt" for p in range(2) for t in range(2)
    )
    # Each stage draws its fresh weights from its own seed (as Megatron does), so the curves are not
    # equal; both start near ln(vocab) and take the same samples.
    ref, got = metrics(tmp_path / "one"), metrics(tmp_path / "both")
    assert [r["consumed_by_source"] for r in got] == [r["consumed_by_source"] for r in ref]
    assert all(abs(b["loss"] - a["loss"]) < 0.1 for a, b in zip(ref, got))


def test_pipeline_refuses_a_loss_it_cannot_split_naming_the_way_out():
    """The schedule runs the next-token loss; another loss (RL's) under pp > 1 is a clear error, not a hang."""
    from frontload.core.errors import FrontloadError
    from frontload.train.loop import LoopConfig, TrainState, train_loop
    from frontload.train.model import ModelConfig

    state = TrainState(model=None, model_config=ModelConfig(layers=2, pp=2), optimizer=None, phase="rl")
    with pytest.raises(FrontloadError, match=r"pp = 2: .*pretrain, sft.*pp = 1"):
        train_loop(state, None, lambda model, batch: None, LoopConfig(steps=1), run=None)
