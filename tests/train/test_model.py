"""The Llama-style Megatron-core model: config validation, forward shapes, checkpoint round trip."""

import warnings

import pytest
import torch

from frontload.core.config import ConfigError, as_dict
from frontload.train.checkpoint import latest_checkpoint, load_model, read_meta, save_checkpoint
from frontload.train.model import ModelConfig, forward, model_config_from_dict
from frontload.train.runtime import init_distributed

TINY = dict(layers=2, hidden=64, heads=2, seq_len=32, vocab_size=128)


def test_config_rejects_bad_shapes_naming_the_field():
    with pytest.raises(ConfigError, match="heads"):
        ModelConfig(layers=2, hidden=64, heads=3)
    with pytest.raises(ConfigError, match="kv_heads"):
        ModelConfig(layers=2, hidden=64, heads=4, kv_heads=3)
    with pytest.warns(UserWarning, match="head_dim 16"):
        ModelConfig(layers=2, hidden=64, heads=4)


def test_config_round_trips_through_json():
    cfg = ModelConfig(**TINY, kv_heads=1, tied_embeddings=True)
    assert model_config_from_dict(as_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="model.depth"):
        model_config_from_dict({**as_dict(cfg), "depth": 3})


def test_forward_gives_logits_and_token_losses():
    init_distributed(seed=3)
    cfg = ModelConfig(**TINY, kv_heads=1)
    model = cfg.build()
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    logits = forward(model, tokens)
    assert logits.shape == (2, cfg.seq_len, cfg.vocab_size)
    losses = forward(model, tokens, labels=tokens)
    assert losses.shape == (2, cfg.seq_len)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none")
    torch.testing.assert_close(losses.flatten(), expected, rtol=1e-5, atol=1e-5)
    # Causal: changing the last token leaves earlier logits unchanged.
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % cfg.vocab_size
    torch.testing.assert_close(forward(model, changed)[:, :-1], logits[:, :-1])


def test_tied_embeddings_share_one_matrix():
    init_distributed(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ModelConfig(**TINY, tied_embeddings=True).build()
    names = [n for n, _ in model.named_parameters()]
    assert "output_layer.weight" not in names


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    init_distributed(seed=5)
    cfg = ModelConfig(**TINY)
    model = cfg.build()
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.json").write_text("{}")
    assert latest_checkpoint(tmp_path / "run") is None
    for step in (2, 4):
        path = save_checkpoint(
            tmp_path / "run",
            model=model,
            model_config=cfg,
            phase="pretrain",
            step=step,
            consumed_samples=8 * step,
            tokenizer_dir=tok_dir,
            tokenizer_fingerprint="abc",
            parent=None,
        )
    assert latest_checkpoint(tmp_path / "run") == path
    assert (path / "tokenizer" / "tokenizer.json").exists()
    meta = read_meta(path)
    assert meta["phase"] == "pretrain" and meta["consumed_samples"] == 32 and meta["parent"] is None
    loaded, loaded_cfg, _ = load_model(path)
    assert loaded_cfg == cfg
    tokens = torch.randint(0, cfg.vocab_size, (1, cfg.seq_len))
    model.eval()
    assert torch.equal(forward(loaded, tokens), forward(model, tokens))


def test_sdpa_attention_matches_megatrons_local_attention():
    """On GPUs without Transformer Engine the model swaps in SDPA attention: same outputs and gradients."""
    from frontload.train.model import sdpa_attention_class

    init_distributed(seed=5)
    cfg = ModelConfig(**TINY, kv_heads=1)  # grouped-query attention takes the enable_gqa path
    model = cfg.build()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    ref = forward(model, tokens, labels=tokens).sum()
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for layer in model.decoder.layers:
        layer.self_attention.core_attention.__class__ = sdpa_attention_class()
    out = forward(model, tokens, labels=tokens).sum()
    out.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, p in zip(ref_grads, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-6)
