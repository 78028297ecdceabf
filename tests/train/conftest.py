"""Shard sets shared by the trainer tests (built once per session from the tiny tokenizer)."""

import warnings

import pytest
import torch
from train_data import reasoning_shards, sft_shards, web_shards

from frontload.train.model import ModelConfig

SEQ = 64


def pytest_configure(config):
    # Megatron-core warns on import about GPU kernels (apex, Transformer Engine) a CPU run never uses.
    for message in (
        "Apex is not installed",
        "Transformer Engine and Apex are not installed",
        "full scope is deprecated",
    ):
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    # Tiny matmuls gain nothing from threads, and on a shared 2-core machine OpenMP's spinning
    # threads made these tests six times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shard_sets(tiny_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_shards")
    return {
        "web": web_shards(root / "web", tiny_tokenizer),
        "reasoning": reasoning_shards(root / "reasoning", tiny_tokenizer),
        "hq": sft_shards(root / "hq", tiny_tokenizer),
    }


@pytest.fixture(scope="session")
def tiny_model_config(tiny_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelConfig(layers=2, hidden=64, heads=2, seq_len=SEQ, vocab_size=tiny_tokenizer.vocab_size)
