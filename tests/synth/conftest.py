"""Helpers for synth tests: a tiny Llama-architecture Hugging Face model built locally around a frontload tokenizer.

The model is random (its text is gibberish) but has the real architecture vLLM serves: 2 layers,
hidden 64, 2 heads of head_dim 32 (a size vLLM's CPU attention supports), saved with safetensors.
Its tokenizer is a frontload tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json`` with
the chat template), in which the chat markers such as ``<think>`` and ``<|end|>`` are single ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_tiny_llama(
    out_dir: str | Path, tokenizer_dir: str | Path, *, layers: int = 2, hidden: int = 64, heads: int = 2, seed: int = 0
) -> Path:
    """A random tiny ``LlamaForCausalLM`` in ``out_dir`` (safetensors) with the tokenizer of ``tokenizer_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).exists():
            shutil.copyfile(Path(tokenizer_dir) / name, out_dir / name)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    LlamaForCausalLM(config).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer) -> Path:
    """Folder of a tiny random Llama model with the shared tiny frontload tokenizer (built once per session)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer.path)
