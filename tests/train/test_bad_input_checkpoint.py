"""Damaged checkpoints: flipped bytes or a truncated file is one error naming the file and what to do.

Every load path checks the sha256 sums saved in meta.json: eval and export (``load_model``), the
next phase and resume (``load_checkpoint``). Resume state is read with ``weights_only=True``.
"""

import json

import pytest
import torch
from export_helpers import save, tiny_model
from test_train_resume import Killed, config

from frontload.core.config import as_dict
from frontload.train.checkpoint import CheckpointError, list_checkpoints, load_model
from frontload.train.export import export_hf
from frontload.train.loop import run_phase
from frontload.train.pretrain import pretrain


def _flip_bytes(path, n=100):
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def two_checkpoints(tiny_tokenizer, tmp_path):
    model, cfg = tiny_model(tiny_tokenizer, seed=11)
    first = save(model, cfg, tiny_tokenizer, tmp_path / "run", step=1)
    second = save(model, cfg, tiny_tokenizer, tmp_path / "run", step=2)
    return first, second


def test_checkpoint_records_a_sha256_per_file(two_checkpoints):
    _, ckpt = two_checkpoints
    sums = json.loads((ckpt / "meta.json").read_text())["sha256"]
    files = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file() and p.name != "meta.json"}
    assert set(sums) == files and "model_tp0_pp0.pt" in sums and all(len(v) == 64 for v in sums.values())


def test_flipped_bytes_in_weights_are_caught_on_load_and_export(two_checkpoints, tmp_path):
    first, ckpt = two_checkpoints
    weights = ckpt / "model_tp0_pp0.pt"
    _flip_bytes(weights)
    # Without the check, these bytes load as a valid tensor with wild values; with it, nothing loads.
    for load in (lambda: load_model(ckpt), lambda: export_hf(ckpt, tmp_path / "hf")):
        with pytest.raises(CheckpointError) as err:
            load()
        msg = str(err.value)
        assert msg.startswith(f"{weights}: damaged") and "\n" not in msg
        assert f"resume from the previous checkpoint {first.name}" in msg
    assert not (tmp_path / "hf").exists()
    load_model(first)  # the undamaged one still loads


def test_truncated_weights_and_tokenizer_name_the_file(two_checkpoints, capsys):
    from frontload.cli import main

    first, ckpt = two_checkpoints
    weights = first / "model_tp0_pp0.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"{weights}: damaged.*retrain"):
        load_model(first)
    tok = next(p for p in (ckpt / "tokenizer").iterdir() if p.is_file())
    tok.write_bytes(tok.read_bytes() + b" ")
    assert main(["export", str(ckpt), "-o", str(ckpt.parent / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tok}: damaged" in err


def test_truncated_optimizer_state_stops_resume_with_one_line(tmp_path, shard_sets, tiny_model_config, tiny_tokenizer):
    cfg = config(tmp_path / "b", shard_sets, tiny_model_config, tiny_tokenizer)

    def kill_at_step_5(state, record):
        if state.step == 5:
            raise Killed

    with pytest.raises(Killed):
        run_phase(cfg, phase="pretrain", model_config=cfg.model, config_dict=as_dict(cfg), on_step=kill_at_step_5)
    (ckpt,) = list_checkpoints(tmp_path / "b")
    optim = ckpt / "optim_tp0_pp0.pt"
    optim.write_bytes(optim.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=f"^{optim}: damaged .*retrain"):
        pretrain(cfg)


def test_resume_state_loads_without_pickle(tmp_path, shard_sets, tiny_model_config, tiny_tokenizer):
    out = pretrain(config(tmp_path / "a", shard_sets, tiny_model_config, tiny_tokenizer))
    for name in ("optim_tp0_pp0.pt", "scheduler.pt", "rng_rank0.pt", "model_tp0_pp0.pt"):
        # Only tensors, containers, numbers and strings: no class from numpy or Megatron to unpickle.
        with torch.serialization.safe_globals([]):
            torch.load(out / name, weights_only=True)
    rng = torch.load(out / "rng_rank0.pt", weights_only=True)
    assert isinstance(rng["numpy"]["keys"], torch.Tensor)


class _Payload:
    """Stands for any pickled object: loading it would run code from the file."""


def test_pickled_object_in_a_checkpoint_is_refused(two_checkpoints):
    from frontload.train.checkpoint import file_sha256

    _, ckpt = two_checkpoints
    weights = ckpt / "model_tp0_pp0.pt"
    torch.save({"embedding.word_embeddings.weight": _Payload()}, weights)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["sha256"]["model_tp0_pp0.pt"] = file_sha256(weights)  # the sums match: only weights_only stops it
    (ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"^{weights}: unreadable \\(UnpicklingError"):
        load_model(ckpt)
