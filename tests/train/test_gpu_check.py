"""The GPU check runs on the CPU (--cpu-smoke) in a process where the data stack cannot be imported.

The GPU machine has CUDA PyTorch and megatron-core (carried as wheels) but no datatrove, DuckDB,
vLLM or polars; so the training loop, model, optimizer and checkpoints must not import them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Not on the GPU machine: importing any of these there would fail.
ABSENT = ["datatrove", "duckdb", "vllm", "polars", "pyarrow", "pandas", "datasets", "math_verify", "einops"]

RUN = f"""
import runpy, sys
for name in {ABSENT!r}:
    sys.modules[name] = None  # "import name" now raises ImportError
import frontload.train.loop, frontload.train.model, frontload.train.checkpoint, frontload.train.optim
sys.argv = ["gpu_check.py", *sys.argv[1:]]
runpy.run_path({str(ROOT / "benchmarks" / "gpu_check.py")!r}, run_name="__main__")
"""


def test_gpu_check_cpu_smoke_runs_without_the_data_stack(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["errors"] == {}
    assert figures["frontload"]["tokens_per_s"] > 0 and figures["plain"]["tokens_per_s"] > 0
    assert figures["ratio_frontload_over_plain"] > 0
    # The SFT step's loss covers the response half only; the resumed state repeats the continued step.
    assert figures["sft"]["loss_units"] == figures["sft"]["expected_units"] == 4 * 16
    assert figures["checkpoint"]["loss_resumed"] == figures["checkpoint"]["loss_continued"]
    assert "[result]" in done.stdout
