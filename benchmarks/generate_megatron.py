"""Benchmark of generation: the Megatron KV-cache sampler against Hugging Face ``generate`` on the export.

Workload: a Llama-style model with random weights (default 4 layers, hidden 256, 4 heads of 64,
context 512; ``--full``: 12 layers, hidden 768, 12 heads, context 1024), a 4096-piece tokenizer
trained on Python's shipped docs, ``--batch`` prompts of ``--prompt-len`` tokens taken from those
docs, ``--new`` greedy tokens each with no early stop. Measured: generated tokens per second of

- ``frontload.train.sampling.generate`` on the Megatron-core GPTModel (Megatron's static KV cache), and
- the baseline, transformers' ``LlamaForCausalLM.generate`` (its dynamic KV cache) on the same
  weights exported with ``frontload.train.export``, same batch, float32, same thread count (``--threads``, default 1);

best of ``--repeats`` runs after one warm-up each. It also checks the two produce the same token ids.

    .venv/bin/python benchmarks/generate_megatron.py           # about a minute on two cores
    .venv/bin/python benchmarks/generate_megatron.py --full
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def _best(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="12 layers, hidden 768, batch 16, 256 new tokens")
    ap.add_argument("--batch", type=int, default=None, help="prompts decoded together (default 8; full 16)")
    ap.add_argument("--prompt-len", type=int, default=32, help="tokens per prompt")
    ap.add_argument("--new", type=int, default=None, help="new tokens per prompt (default 64; full 256)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side (best is reported)")
    args = ap.parse_args()
    batch = args.batch or (16 if args.full else 8)
    new = args.new or (256 if args.full else 64)

    from pydoc_data.topics import topics

    import torch
    from transformers import AutoModelForCausalLM

    from frontload.corpus.tokenizer import train_tokenizer_from_texts
    from frontload.train.export import export_model
    from frontload.train.model import ModelConfig
    from frontload.train.runtime import init_distributed
    from frontload.train.sampling import generate

    shape = (
        dict(layers=12, hidden=768, heads=12, seq_len=1024)
        if args.full
        else dict(layers=4, hidden=256, heads=4, seq_len=512)
    )
    with tempfile.TemporaryDirectory() as tmp:
        texts = [topics[k] for k in sorted(topics)]
        tok = train_tokenizer_from_texts(texts, Path(tmp) / "tok", vocab_size=4096)
        stream = tok.encode("\n".join(texts[:50]))
        prompts = [stream[i * args.prompt_len : (i + 1) * args.prompt_len] for i in range(batch)]
        init_distributed(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = ModelConfig(**shape, vocab_size=tok.vocab_size, init_std=0.05)
            model = cfg.build().eval()
        hf_dir = export_model(model, cfg, tok.path, Path(tmp) / "hf")
        hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()

        def ours():
            return generate(model, tok, prompts, max_new_tokens=new, stop=(), batch_size=batch)

        ids = torch.tensor(prompts)

        def theirs():
            with torch.no_grad():
                return hf.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=tok.pad_id,
                )

        if args.threads:
            # Set last: building the model resets it. On a shared, oversubscribed machine multi-threaded
            # kernels wait on descheduled threads.
            torch.set_num_threads(args.threads)
        t_ours, out_ours = _best(ours, args.repeats)
        t_hf, out_hf = _best(theirs, args.repeats)
    tokens = batch * new
    same = sum(o.token_ids == out_hf[i, args.prompt_len :].tolist() for i, o in enumerate(out_ours))
    print(
        f"model: {shape} ({cfg.num_parameters() / 1e6:.1f}M params), batch {batch}, prompt {args.prompt_len}, "
        f"new {new}, torch threads {torch.get_num_threads()}"
    )
    print(f"megatron KV-cache sampler: {tokens / t_ours:8.1f} tokens/s ({t_ours:.2f} s)")
    print(f"transformers generate    : {tokens / t_hf:8.1f} tokens/s ({t_hf:.2f} s)  [baseline]")
    print(f"ratio megatron / transformers: {t_hf / t_ours:.2f}x; identical greedy ids for {same}/{batch} prompts")


if __name__ == "__main__":
    main()
