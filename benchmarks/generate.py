"""Benchmark of the synth stage: built-in generator throughput, and trace-pipeline tokens/s vs vLLM offline.

Two measurements, each printed as a ratio against a baseline measured in the same run:

1. ``generators``: problems per CPU-second of every built-in family (the generator call alone, and
   the full record path: block seeding, render, hash, holdout check), against the target of 20k
   problems/s/core; CPU time rather than wall time, so other jobs on the machine do not skew it;
   if reasoning-gym is installed, also its ``basic_arithmetic`` generator as a named baseline.
2. ``pipeline``: completion tokens/s of ``generate_traces`` (datatrove ``InferenceRunner`` → vLLM
   OpenAI server, records written, checkpoints on) against vLLM's own offline ``LLM.generate`` on the
   same prompts, the same tiny random Llama and the same sampling (``ignore_eos``, fixed length).
   Both run one after the other on the same machine, engine start excluded from both, best of two;
   the pipeline's time is the whole ``generate_traces`` call (checks, executor, reading, writing).

Usage::

    python benchmarks/generate.py                 # small default: 64 problems x 2 rollouts x 64 tokens
    python benchmarks/generate.py --full          # 256 problems x 4 rollouts x 256 tokens, hidden 256
    python benchmarks/generate.py --only generators
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bench_generators(n: int) -> None:
    from frontload.synth.families import FAMILIES
    from frontload.synth.sources import BLOCK, GeneratorSource, draw_block

    # CPU time of this process, not wall time: the rate per core, robust to other jobs sharing the machine.
    clock = time.process_time
    print(f"\n== built-in generators, problems per CPU-second, {n} problems per family (target 20000/s) ==")
    print(f"{'family':<16} {'gen/s':>9} {'record/s':>9} {'record vs target':>17}")
    total_gen = total_rec = 0.0
    for name, fam in FAMILIES.items():
        rng = random.Random(0)
        t = clock()
        for i in range(n):
            fam.gen(rng, 1 + i % 5, False, 1 << 30)
        gen_s = clock() - t
        src = GeneratorSource(families=[name], n=n, difficulty=(1, 5))
        t = clock()
        for b in range(n // BLOCK):
            draw_block(src, b, base=0)
        rec_s = (clock() - t) * n / (n // BLOCK * BLOCK)
        total_gen += gen_s
        total_rec += rec_s
        print(f"{name:<16} {n / gen_s:>9.0f} {n / rec_s:>9.0f} {n / rec_s / 20000:>16.2f}x")
    k = len(FAMILIES) * n
    print(f"{'all (mixed)':<16} {k / total_gen:>9.0f} {k / total_rec:>9.0f} {k / total_rec / 20000:>16.2f}x")
    try:
        import reasoning_gym
    except ImportError:
        print("reasoning-gym not installed: no external baseline")
        return
    t = clock()
    ds = reasoning_gym.create_dataset("basic_arithmetic", size=n, seed=0)
    for i in range(n):
        ds[i]
    gym = n / (clock() - t)
    print(
        f"baseline reasoning-gym basic_arithmetic: {gym:.0f}/s; frontload records/s vs it: {k / total_rec / gym:.1f}x"
    )


# The same batch limit on both sides; vllm-cpu 0.32's engine core died here with 128 sequences at once.
MAX_NUM_SEQS = 64

OFFLINE = """
import json, sys, time
from vllm import LLM, SamplingParams
cfg = json.loads(sys.argv[1])
llm = LLM(model=cfg["model"], max_model_len=cfg["max_model_len"], enforce_eager=True, dtype="float32", seed=0,
          max_num_seqs=cfg["max_num_seqs"])
params = [SamplingParams(max_tokens=cfg["max_tokens"], temperature=1.0, ignore_eos=True, seed=s, skip_special_tokens=False)
          for s in cfg["seeds"]]
llm.generate(cfg["prompts"][:4], params[:4], use_tqdm=False)  # warm-up
best = None
for _ in range(cfg["repeats"]):  # best of a few: other jobs share this machine
    t = time.perf_counter()
    outs = llm.generate(cfg["prompts"], params, use_tqdm=False)
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
print("RESULT", json.dumps({"seconds": best, "tokens": sum(len(o.outputs[0].token_ids) for o in outs)}))
"""


def _load_conftest():
    spec = importlib.util.spec_from_file_location("synth_conftest", ROOT / "tests/synth/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("vLLM server exited during start")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("vLLM server did not start")


def bench_pipeline(
    n_problems: int, rollouts: int, max_tokens: int, hidden: int, layers: int, heads: int, repeats: int = 2
) -> None:
    from pydoc_data.topics import topics

    from frontload.core.chat import render_prompt
    from frontload.corpus.tokenizer import train_tokenizer_from_texts
    from frontload.synth.generate import GenerateConfig, _request_seed, generate_traces
    from frontload.synth.sources import write_problems

    work = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    tok = train_tokenizer_from_texts([topics[k] for k in sorted(topics)], work / "tokenizer", vocab_size=2048)
    model = _load_conftest().build_tiny_llama(work / "model", tok.path, layers=layers, hidden=hidden, heads=heads)
    write_problems(work / "problems", families=["arithmetic", "word_problem", "logic"], n=n_problems, seed=0)
    docs = [json.loads(x) for x in (work / "problems/data/00000.jsonl").read_text().splitlines()]
    prompts, seeds = [], []
    for d in docs:
        for k in range(rollouts):
            prompts.append(render_prompt(d["metadata"]["problem"]))
            seeds.append(_request_seed(0, d["id"], k))
    max_model_len = 1024
    print(
        f"\n== trace pipeline vs vLLM offline: {n_problems} problems x {rollouts} rollouts x {max_tokens} tokens, "
        f"Llama {layers} layers hidden {hidden} =="
    )

    cfg = {
        "model": str(model),
        "max_model_len": max_model_len,
        "max_tokens": max_tokens,
        "prompts": prompts,
        "seeds": seeds,
        "repeats": repeats,
        "max_num_seqs": MAX_NUM_SEQS,
    }
    out = subprocess.run([sys.executable, "-c", OFFLINE, json.dumps(cfg)], capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(out.stderr[-12000:])
        raise SystemExit("offline vLLM run failed")
    offline = json.loads(line[len("RESULT ") :])
    offline_tps = offline["tokens"] / offline["seconds"]
    print(
        f"baseline vLLM LLM.generate: {offline['tokens']} tokens in {offline['seconds']:.2f}s = {offline_tps:.0f} tokens/s"
    )

    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "synth/vllm_launch.py"), "--port", str(port), f"--model={model}",
         f"--max-model-len={max_model_len}", "--enforce-eager", "--dtype=float32", "--seed=0", "--disable-uvicorn-access-log",
         f"--max-num-seqs={MAX_NUM_SEQS}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, server)
        gen = dict(
            endpoint=url,
            rollouts=rollouts,
            max_tokens=max_tokens,
            max_model_len=max_model_len,
            temperature=1.0,
            stop=[],
            extra_params={"ignore_eos": True, "skip_special_tokens": False},
            concurrency=MAX_NUM_SEQS,
        )
        write_problems(work / "warm", families=["arithmetic"], n=4, seed=1)
        generate_traces(work / "warm", work / "warm-traces", GenerateConfig(**{**gen, "rollouts": 1}))
        dt = None
        for r in range(repeats):  # best of a few, like the baseline; each run writes a fresh folder
            t = time.perf_counter()
            m = generate_traces(work / "problems", work / f"traces-{r}", GenerateConfig(**gen))
            took = time.perf_counter() - t
            dt = took if dt is None else min(dt, took)
    finally:
        server.terminate()
        server.wait(timeout=60)
    tokens = m.counts["completion_tokens"]
    tps = tokens / dt
    print(
        f"frontload generate_traces:  {tokens} tokens in {dt:.2f}s = {tps:.0f} tokens/s "
        f"({m.counts['rollouts']} records, {m.counts['failures']} failures)"
    )
    print(f"ratio pipeline / offline: {tps / offline_tps:.2f}x (target >= 0.8x)")


def main() -> None:
    from loguru import logger

    logger.remove()  # datatrove's per-task stats tables would bury the results
    logger.add(sys.stderr, level="WARNING")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--full", action="store_true", help="full size: 256 problems x 4 rollouts x 256 tokens, hidden 256"
    )
    ap.add_argument("--only", choices=["generators", "pipeline"], help="run one of the two measurements")
    ap.add_argument("--n", type=int, default=None, help="problems per family for the generator benchmark")
    args = ap.parse_args()
    if args.only != "pipeline":
        bench_generators(args.n or (100_000 if args.full else 5_000))
    if args.only != "generators":
        if args.full:
            bench_pipeline(256, 4, 256, hidden=256, layers=4, heads=4)
        else:
            bench_pipeline(64, 2, 64, hidden=64, layers=2, heads=2)


if __name__ == "__main__":
    main()
