"""Pretraining on a mixed shard set lowers the loss; SFT from that checkpoint lowers the response loss."""

import json

import pytest
import torch

from frontload.core.events import read_events
from frontload.corpus.mix import MixSchedule, MixStage
from frontload.train.checkpoint import load_model, read_meta
from frontload.train.loop import collate, token_loss
from frontload.train.optim import OptimConfig
from frontload.train.pretrain import PretrainConfig, pretrain
from frontload.train.sft import SFTConfig, sft

SEQ = 64


def metrics(run_dir):
    return read_events(run_dir / "events" / "metrics.rank0.jsonl")[0]


@pytest.fixture(scope="module")
def pretrained(shard_sets, tiny_tokenizer, tiny_model_config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrain")
    cfg = PretrainConfig(
        run_dir=str(run_dir),
        model=tiny_model_config,
        tokenizer=str(tiny_tokenizer.path),
        shards={k: str(v) for k, v in shard_sets.items() if k != "hq"},
        mix=MixSchedule(
            pretrain=[
                MixStage(samples=160, blend={"web": 1.0}),
                MixStage(samples=160, blend={"web": 0.5, "reasoning": 0.5}),
            ]
        ),
        optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=4),
        global_batch=8,
        micro_batch=4,
        save_every=20,
        progress=False,
    )
    return run_dir, pretrain(cfg)


def test_pretraining_loss_falls_on_a_mixed_shard_set(pretrained):
    run_dir, ckpt = pretrained
    records = metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, 41))
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-5:]) / 5
    assert last < first - 1.0, (first, last)
    final = records[-1]
    # Stage 1 is all web; stage 2 splits evenly, so about 80 of its 160 samples are reasoning.
    assert final["consumed_samples"] == 320
    assert sum(final["consumed_by_source"].values()) == 320
    assert 60 <= final["consumed_by_source"]["reasoning"] <= 100
    for key in ("lr", "grad_norm", "tokens_per_s"):
        assert all(r[key] > 0 for r in records), key
    meta = read_meta(ckpt)
    assert meta["phase"] == "pretrain" and meta["step"] == 40 and meta["parent"] is None
    plan = json.loads((run_dir / "mix_plan.json").read_text())
    assert meta["mix_plan_fingerprint"] == plan["phases"]["pretrain"]["fingerprint"]
    assert json.loads((run_dir / "config.json").read_text())["stage"] == "pretrain"


def response_loss(ckpt, tokenizer, examples) -> float:
    from train_data import addition_examples

    model, cfg, _ = load_model(ckpt)
    samples = []
    for p, r in addition_examples(examples, seed=99):
        pi, ri = tokenizer.encode(p), tokenizer.encode(r)
        ids = (pi + ri + [tokenizer.eod_id] * SEQ)[: SEQ + 1]
        mask = ([0] * len(pi) + [1] * len(ri) + [0] * SEQ)[1 : SEQ + 1]
        samples.append({"tokens": ids[:-1], "labels": ids[1:], "loss_mask": mask, "position_ids": list(range(SEQ))})
    with torch.no_grad():
        total, n, _ = token_loss(model, collate(samples, list(range(len(samples)))))
    return float(total / n)


def test_sft_lowers_response_loss_and_records_its_parent(pretrained, shard_sets, tiny_tokenizer, tmp_path):
    _, parent = pretrained
    cfg = SFTConfig(
        run_dir=str(tmp_path / "sft"),
        init_from=str(parent),
        shards={"hq": str(shard_sets["hq"])},
        mix=MixSchedule(sft=[MixStage(samples=96, blend={"hq": 1.0})]),
        optim=OptimConfig(lr=2e-3, min_lr=2e-4),
        global_batch=8,
        micro_batch=8,
        progress=False,
    )
    ckpt = sft(cfg)
    meta = read_meta(ckpt)
    assert meta["phase"] == "sft" and meta["parent"] == str(parent)
    assert (ckpt / "tokenizer" / "tokenizer.model").exists()
    before, after = response_loss(parent, tiny_tokenizer, 16), response_loss(ckpt, tiny_tokenizer, 16)
    assert after < before - 0.5, (before, after)
    records = metrics(tmp_path / "sft")
    assert records[-1]["consumed_by_source"] == {"hq": 96}
    # The loss counts response tokens only: fewer units than tokens in the batch.
    assert all(r["loss_units"] < 8 * SEQ for r in records)
