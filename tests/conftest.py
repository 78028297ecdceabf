"""Shared test set-up: offline hub settings, vLLM's CPU knobs, and the gpu marker."""

import os

# Tests make their own tiny models and data; nothing may be fetched from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A 512-piece frontload tokenizer (SentencePiece + tokenizer.json) trained on Python's shipped docs."""
    from pydoc_data.topics import topics

    from frontload.corpus.tokenizer import train_tokenizer_from_texts

    out = tmp_path_factory.mktemp("tiny_tokenizer")
    return train_tokenizer_from_texts([topics[k] for k in sorted(topics)], out, vocab_size=512)
