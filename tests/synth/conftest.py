"""Helpers for synth tests: a tiny Llama-architecture Hugging Face model and tokenizer built locally.

The model is random (its text is gibberish) but has the real architecture vLLM serves: 2 layers,
hidden 64, 2 heads of head_dim 32 (a size vLLM's CPU attention supports), saved with safetensors.
The tokenizer is a byte-level BPE trained on Python's own documentation text, with the frontload
chat markers as special tokens so ``<think>`` and ``<|end|>`` are single ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from frontload.corpus.chat import END, SPECIAL_TOKENS


def build_tokenizer(out_dir: Path, vocab_size: int = 512) -> None:
    """Train a small byte-level BPE on shipped English text and save it in Hugging Face format."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eod>", *SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(topics.values())[:200]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token="<pad>",
        bos_token="<eod>",
        additional_special_tokens=list(SPECIAL_TOKENS),
    )
    fast.save_pretrained(str(out_dir))


def build_tiny_llama(out_dir: str | Path, *, layers: int = 2, hidden: int = 64, heads: int = 2, seed: int = 0) -> Path:
    """A random tiny ``LlamaForCausalLM`` plus tokenizer in ``out_dir`` (safetensors), loadable by vLLM."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out_dir)
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
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama model with its tokenizer (session-scoped: built once)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
