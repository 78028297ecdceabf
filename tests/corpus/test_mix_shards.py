"""The mix on shard sets made by the real shard builder (datatrove + the tiny tokenizer)."""

from __future__ import annotations

import json

import torch

from frontload.core.chat import render_example
from frontload.corpus.mix import MixSchedule, MixStage
from frontload.corpus.mix_data import build_phase_dataset
from frontload.corpus.mix_plan import plan_mix
from frontload.corpus.shards import build_shards

SEQ = 48


def test_sft_phase_on_built_shards_puts_loss_on_responses_only(tiny_tokenizer, tmp_path):
    from pydoc_data.topics import topics

    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"text": topics[k][:600]}) + "\n" for k in sorted(topics)[:60]))
    rows = []
    for i in range(60):
        prompt, response = render_example(f"What is {i} + {i + 3}?", f"{i} + {i + 3} = {2 * i + 3}", str(2 * i + 3))
        rows.append({"text": prompt + response, "metadata": {"prompt": prompt, "response": response}})
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dirs = {
        "web": tmp_path / "shards-web",
        "chat": tmp_path / "shards-chat",
    }
    build_shards([web], dirs["web"], tiny_tokenizer, tasks=1, workers=1)
    build_shards([chat], dirs["chat"], tiny_tokenizer, sft=True, tasks=1, workers=1)

    schedule = MixSchedule(
        pretrain=[MixStage(tokens=4000, blend={"web": 1.0}), MixStage(tokens=3000, blend={"web": 0.5, "chat": 0.5})],
        sft=[MixStage(epochs=1, blend={"chat": 1.0})],
    )
    plan = plan_mix(schedule, dirs, seq_len=SEQ, seed=5)
    assert plan.tokenizer_fingerprint == tiny_tokenizer.fingerprint
    assert plan.phase("pretrain").stages[1].sources["chat"].cumulative_epochs < 1
    sft = build_phase_dataset(plan, dirs, tmp_path / "cache", phase="sft")

    think, eod = tiny_tokenizer.token_id("<think>"), tiny_tokenizer.eod_id
    assert len(sft) == plan.phase("sft").samples
    for k in range(len(sft)):
        item = sft[k]
        text = torch.cat([item["tokens"], item["labels"][-1:]]).tolist()
        # A response runs from <think> through the EOD after <|end|>; before the sample's first
        # marker we are in a response if an EOD comes before any <think>.
        markers = [t for t in text if t in (think, eod)]
        in_response = bool(markers) and markers[0] == eod
        expected = []
        for t in text:
            if t == think:
                in_response = True
            expected.append(1.0 if in_response else 0.0)
            if t == eod:
                in_response = False
        assert item["loss_mask"].tolist() == expected[1:], k
        assert item["source"] == "chat" and item["stage"] == 0

    pretrain = build_phase_dataset(plan, dirs, tmp_path / "cache", phase="pretrain")
    sources = [pretrain[k]["source"] for k in range(len(pretrain))]
    boundary = plan.phase("pretrain").stages[1].start_sample
    assert set(sources[:boundary]) == {"web"} and set(sources[boundary:]) == {"web", "chat"}
