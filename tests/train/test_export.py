"""Hugging Face export: transformers loads it with the same logits and greedy text; vLLM agrees on greedy ids."""

import json

import pytest
import torch
from export_helpers import memorized_checkpoint, save, tiny_model, vllm_greedy

from frontload.train.export import export_hf, export_model, hf_state_dict
from frontload.train.model import forward
from frontload.train.sampling import generate

PROMPTS = ["<|user|>\nWhat is the module search path?\n<|assistant|>\n", "The function returns", "x"]


@pytest.mark.parametrize("tied,kv_heads", [(False, 2), (True, 1)])
def test_transformers_loads_the_export_with_matching_logits(tiny_tokenizer, tmp_path, tied, kv_heads):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, cfg = tiny_model(tiny_tokenizer, seed=2, tied_embeddings=tied, kv_heads=kv_heads)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    out = export_model(model, cfg, tiny_tokenizer.path, tmp_path / "hf")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if torch.is_tensor(v))
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert set(hf.state_dict()) == set(hf_state_dict(model, cfg)) | ({"lm_head.weight"} if tied else set())
    assert hf.config.tie_word_embeddings is tied and hf.config.num_key_value_heads == kv_heads
    ids = torch.tensor([tiny_tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():
        assert torch.allclose(forward(model.eval(), ids), hf(ids).logits, atol=1e-5, rtol=0)
    # The shipped tokenizer files give transformers the very ids frontload's tokenizer gives.
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok(PROMPTS[0], add_special_tokens=False).input_ids == ids[0].tolist()
    # Greedy generation agrees with the Megatron KV-cache sampler.
    ours = generate(model, tiny_tokenizer, PROMPTS[:1], max_new_tokens=10, stop=())[0]
    with torch.no_grad():
        theirs = hf.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert theirs[0, ids.shape[1] :].tolist() == ours.token_ids


def test_export_command_writes_a_complete_folder(tiny_tokenizer, tmp_path_factory, tmp_path):
    from frontload.cli import main

    ckpt = memorized_checkpoint(tiny_tokenizer, tmp_path_factory)
    assert main(["export", str(ckpt), "-o", str(tmp_path / "hf")]) == 0
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "special_tokens_map.json" in names and "tokenizer.model" not in names
    gen = json.loads((tmp_path / "hf/generation_config.json").read_text())
    assert gen["eos_token_id"] == [tiny_tokenizer.token_id("<|end|>"), tiny_tokenizer.eod_id]
    assert json.loads((tmp_path / "hf/frontload_export.json").read_text())["phase"] == "sft"
    # Exporting again replaces the folder; a missing checkpoint is a one-line error.
    export_hf(ckpt, tmp_path / "hf")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")]) == 2


@pytest.mark.vllm
def test_vllm_serves_the_export_and_agrees_with_the_megatron_sampler(tiny_tokenizer, tmp_path):
    pytest.importorskip("vllm")
    # A large init spreads the logits, so greedy choices are far from float ties.
    model, cfg = tiny_model(tiny_tokenizer, seed=1, init_std=0.3)
    ckpt = save(model, cfg, tiny_tokenizer, tmp_path / "run")
    out = export_hf(ckpt, tmp_path / "hf")
    ours = generate(model, tiny_tokenizer, PROMPTS, max_new_tokens=16, stop=())
    theirs = vllm_greedy(out, [o.prompt_ids for o in ours], max_tokens=16)
    assert theirs == [o.token_ids for o in ours]
