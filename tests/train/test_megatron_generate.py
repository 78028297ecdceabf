"""The Megatron KV-cache sampler: batched greedy equals one-by-one and the full forward, seeds, stops."""

import pytest
import torch
from export_helpers import examples, memorized_checkpoint, tiny_model

from frontload.core.errors import FrontloadError
from frontload.train.sampling import generate, sequence_logprobs

PROMPTS = ["<|user|>\nWhat is the module search path?\n<|assistant|>\n", "The function returns", "x"]


@pytest.fixture(scope="module")
def peaky(tiny_tokenizer):
    # A large init spreads the logits, so greedy choices are far from ties.
    model, _ = tiny_model(tiny_tokenizer, seed=1, init_std=0.3)
    return model


def test_batched_greedy_matches_single_prompts_and_the_full_forward(peaky, tiny_tokenizer):
    outs = generate(peaky, tiny_tokenizer, PROMPTS, max_new_tokens=12, stop=())
    assert [o.prompt_index for o in outs] == [0, 1, 2]
    for o in outs:
        assert o.finish_reason == "length" and len(o.token_ids) == len(o.logprobs) == 12
        alone = generate(peaky, tiny_tokenizer, [PROMPTS[o.prompt_index]], max_new_tokens=12, stop=())[0]
        assert alone.token_ids == o.token_ids
        # The cached decode scores each token as one uncached forward over prompt + completion does.
        full = sequence_logprobs(peaky, o.prompt_ids, o.token_ids)
        assert max(abs(a - b) for a, b in zip(full, o.logprobs)) < 1e-3
        assert o.text == tiny_tokenizer.decode(o.token_ids)
    # Token-id prompts (as RL passes them) give the same completions as their text.
    by_ids = generate(peaky, tiny_tokenizer, [o.prompt_ids for o in outs], max_new_tokens=12, stop=())
    assert [o.token_ids for o in by_ids] == [o.token_ids for o in outs]


def test_sampling_depends_on_seed_not_on_batching(peaky, tiny_tokenizer):
    kw = dict(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    batched = generate(peaky, tiny_tokenizer, PROMPTS, **kw)
    split = generate(peaky, tiny_tokenizer, PROMPTS[:1], batch_size=2, **kw)
    assert [o.token_ids for o in batched[:3]] == [o.token_ids for o in split]
    assert len({tuple(o.token_ids) for o in batched[:3]}) > 1  # the n samples of one prompt differ
    other = generate(peaky, tiny_tokenizer, PROMPTS[:1], max_new_tokens=8, temperature=1.0, n=3, seed=8)
    assert [o.token_ids for o in other] != [o.token_ids for o in split]
    nucleus = generate(peaky, tiny_tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, top_p=1e-6, seed=3)
    greedy = generate(peaky, tiny_tokenizer, PROMPTS, max_new_tokens=8)
    assert [o.token_ids for o in nucleus] == [o.token_ids for o in greedy]  # top_p -> 0 keeps only the argmax


def test_stops_at_end_marker_and_restores_train_mode(tiny_tokenizer, tmp_path_factory):
    from frontload.train.checkpoint import load_model

    model, _, _ = load_model(memorized_checkpoint(tiny_tokenizer, tmp_path_factory))
    model.train()
    prompt = examples()[0][0]
    out = generate(model, tiny_tokenizer, [prompt, prompt], max_new_tokens=40)
    assert model.training
    for o in out:
        assert o.finish_reason == "stop"
        assert o.token_ids[-1] == tiny_tokenizer.token_id("<|end|>")
        assert o.text == "The answer is \\boxed{42}."  # the stop marker is cut from the text
    short = generate(model, tiny_tokenizer, [prompt], max_new_tokens=3)[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 3
    # A multi-token stop string ends generation and is cut from the text as well.
    worded = generate(model, tiny_tokenizer, [prompt], max_new_tokens=40, stop=("boxed",))[0]
    assert worded.finish_reason == "stop" and worded.text == "The answer is \\"


def test_context_limits(peaky, tiny_tokenizer):
    long_prompt = "word " * 200
    with pytest.raises(FrontloadError, match="prompt 0 has .* tokens; the model's context is 64"):
        generate(peaky, tiny_tokenizer, [long_prompt], max_new_tokens=4)
    ids = tiny_tokenizer.encode(PROMPTS[0])
    out = generate(peaky, tiny_tokenizer, [PROMPTS[0]], max_new_tokens=500, stop=())[0]
    assert out.finish_reason == "length" and len(ids) + len(out.token_ids) == 64
    assert torch.is_grad_enabled()
