"""GRPO loss, advantages, rewards and the RL prompt set, checked against values computed by hand."""

import json
import math
import threading

import pytest
import torch

from frontload.core.errors import FrontloadError
from frontload.train.prompts import PromptOrder, load_prompts
from frontload.train.rewards import RewardConfig, RewardScorer
from frontload.train.rl_loss import group_advantages, grpo_loss


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv, zero = group_advantages(rewards, 4, std_normalize=True, eps=0.0)
    # group 1: mean 0.25, unbiased std sqrt((0.75² + 3·0.25²)/3) = 0.5
    assert adv[:4].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    # group 2 has no variance: no advantage, and it is flagged
    assert adv[4:].tolist() == pytest.approx([0.0] * 4)
    assert zero.tolist() == [False, True]
    adv_nostd, _ = group_advantages(rewards, 4, std_normalize=False)
    assert adv_nostd[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    with pytest.raises(ValueError):
        group_advantages(rewards, 3)


def _batch():
    # Two sequences, 4 positions; position 0 is prompt, sequence 1 ends with padding.
    ratios = torch.tensor([[100.0, 1.5, 0.5, 1.0], [100.0, 0.5, 1.5, 7.0]])
    old = torch.full((2, 4), math.log(0.25))
    logp = (old + torch.log(ratios)).requires_grad_(True)
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.float32)
    adv = torch.tensor([1.0, -1.0])
    return logp, old, adv, mask


def test_grpo_loss_clipping_and_prompt_masking_by_hand():
    logp, old, adv, mask = _batch()
    loss, stats = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    # A=+1: ratio 1.5 clipped to 1.2; 0.5 kept (min); 1.0 kept.  A=-1: ratio 0.5 → clip -0.8 wins; 1.5 → -1.5.
    objective = 1.2 + 0.5 + 1.0 - 0.8 - 1.5
    assert loss.item() == pytest.approx(-objective / 5)
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    assert stats["tokens"] == 5
    loss.backward()
    g = logp.grad
    # prompt and padding carry no gradient, nor do clipped tokens
    assert g[0, 0] == 0 and g[1, 0] == 0 and g[1, 3] == 0
    assert g[0, 1] == 0 and g[1, 1] == 0
    # d/dlogp of -(ratio·A)/N is -A·ratio/N
    assert g[0, 2].item() == pytest.approx(-0.5 / 5)
    assert g[0, 3].item() == pytest.approx(-1.0 / 5)
    assert g[1, 2].item() == pytest.approx(1.5 / 5)


def test_grpo_loss_asymmetric_clip_and_batch_token_count():
    logp, old, adv, mask = _batch()
    # eps_high 0.6 lets ratio 1.5 through for A=+1
    loss, stats = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.6)
    assert loss.item() == pytest.approx(-(1.5 + 0.5 + 1.0 - 0.8 - 1.5) / 5)
    assert stats["clip_frac"] == pytest.approx(1 / 5)
    # a minibatch normalised by the whole rollout batch's token count (say 20 tokens)
    loss20, _ = grpo_loss(logp, old, adv, mask, eps_high=0.6, num_tokens=20)
    assert loss20.item() == pytest.approx(loss.item() * 5 / 20)


def test_grpo_loss_k3_kl_by_hand():
    logp, old, adv, mask = _batch()
    ref = logp.detach() + math.log(2.0)
    ref[:, 0] = -50.0  # prompt positions: must not count
    ref[1, 3] = 9.0  # padding: must not count
    base, _ = grpo_loss(logp, old, adv, mask)
    loss, stats = grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)
    k3 = 2.0 - math.log(2.0) - 1.0  # exp(d) - d - 1 with d = log 2
    assert stats["kl"] == pytest.approx(k3)
    assert loss.item() == pytest.approx(base.item() + 0.1 * k3, abs=1e-6)
    # with kl_coef 0 the KL is reported but does not enter the loss
    loss0, stats0 = grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.0)
    assert loss0.item() == pytest.approx(base.item()) and stats0["kl"] == pytest.approx(k3)


def _exact(gold, prediction, mode="math"):
    if prediction is None:
        return "unparseable"
    return "correct" if prediction.strip() == gold else "wrong"


def test_rewards_correct_and_format():
    scorer = RewardScorer(RewardConfig(correct=1.0, format=0.25), verifier=_exact)
    good = "<think>\n2+2=4\n</think>\nThe answer is \\boxed{4}.<|end|>"
    unclosed = "<think>\n2+2=4 so \\boxed{4}"
    wrong = "<think>\nhm\n</think>\nThe answer is \\boxed{5}.<|end|>"
    rs = scorer.score_batch(["4", "4", "4", "4"], [good, unclosed, wrong, "no idea"])
    assert [r.reward for r in rs] == [1.25, 1.0, 0.25, 0.0]
    assert [r.verdict for r in rs] == ["correct", "correct", "wrong", "unparseable"]
    assert rs[0].prediction == "4" and scorer.errors == 0


def test_verifier_crash_and_hang_give_zero_reward_and_count():
    release = threading.Event()

    def flaky(gold, prediction, mode="math"):
        if prediction == "boom":
            raise RuntimeError("parser exploded")
        if prediction == "hang":
            release.wait(60)  # stands in for a sympy simplification that never ends
        return _exact(gold, prediction)

    scorer = RewardScorer(RewardConfig(verifier_timeout_s=0.3), verifier=flaky)
    completions = [f"The answer is \\boxed{{{p}}}." for p in ("boom", "4", "hang", "4")]
    rs = scorer.score_batch(["4"] * 4, completions)
    release.set()
    assert [r.reward for r in rs] == [0.0, 1.0, 0.0, 1.0]
    assert [r.verdict for r in rs] == ["error", "correct", "error", "correct"]
    assert "parser exploded" in rs[0].error and "0.3" in rs[2].error
    assert scorer.errors == 2


def test_real_verifier_rewards():
    pytest.importorskip("frontload.filters.verify")
    scorer = RewardScorer(RewardConfig())
    rs = scorer.score_batch(["1/2", "1/2"], ["The answer is \\boxed{0.5}.", "The answer is \\boxed{3}."])
    assert [r.verdict for r in rs] == ["correct", "wrong"]


def test_load_prompts_jsonl_and_errors(tmp_path):
    good = tmp_path / "rl.jsonl"
    good.write_text(
        json.dumps({"question": "What is 2+2?", "answer": "4"})
        + "\n\n"
        + json.dumps({"question": "3*3?", "answer": 9})
    )
    ps = load_prompts(good)
    assert [p.answer for p in ps] == ["4", "9"]
    assert ps[0].prompt.startswith("<|user|>\nWhat is 2+2?") and ps[0].prompt.endswith("<|assistant|>\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "1"}) + "\n" + json.dumps({"question": "y"}) + "\n")
    with pytest.raises(FrontloadError, match=r"bad.jsonl:2: no 'answer'"):
        load_prompts(bad)
    (tmp_path / "broken.jsonl").write_text("{nope\n")
    with pytest.raises(FrontloadError, match=r"broken.jsonl:1: not JSON"):
        load_prompts(tmp_path / "broken.jsonl")


def test_load_prompts_from_corpus_folder(tmp_path):
    from datatrove.data import Document
    from datatrove.pipeline.writers import JsonlWriter

    from frontload.core.chat import render_example

    docs = []
    for i in range(3):
        prompt, response = render_example(f"What is {i}+1?", f"{i}+1={i + 1}", str(i + 1))
        meta = {"problem": f"What is {i}+1?", "answer": str(i + 1), "source": "arith", "prompt": prompt}
        docs.append(Document(text=prompt + response, id=f"d{i}", metadata=meta))
    with JsonlWriter(str(tmp_path / "corpus" / "data")) as w:
        for d in docs:
            w.write(d)
    ps = load_prompts(tmp_path / "corpus")
    assert sorted(p.answer for p in ps) == ["1", "2", "3"]
    assert {p.id for p in ps} == {"d0", "d1", "d2"} and all(p.source == "arith" for p in ps)


def test_prompt_order_is_seeded_epoch_permutations():
    order = PromptOrder(5, seed=3)
    first = order.indices(0, 12)
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:10]) == list(range(5))
    # resuming at position 7 continues exactly where a straight run would be
    assert PromptOrder(5, seed=3).indices(7, 5) == first[7:12]
    assert any(PromptOrder(5, seed=s).indices(0, 5) != first[:5] for s in (4, 5, 6))


def test_load_prompts_reads_a_synth_problems_corpus(tmp_path):
    from frontload.synth.sources import write_problems

    write_problems(tmp_path / "problems", families=["arithmetic"], n=6, seed=3, difficulty=1)
    ps = load_prompts(tmp_path / "problems")
    assert len(ps) == 6 and len({p.id for p in ps}) == 6
    assert all(p.prompt.startswith("<|user|>\n") and p.prompt.endswith("<|assistant|>\n") for p in ps)
    assert all(p.answer.lstrip("-").isdigit() for p in ps)
