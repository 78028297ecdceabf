"""A study killed with SIGKILL in the middle of pretraining and rerun ends with the same results."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STUDY = Path(__file__).with_name("resume_study.toml")


def _run(cwd: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "frontload", "run", "study.toml", "--no-report", *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _results(ws: Path) -> dict:
    evals = {}
    for f in sorted(ws.glob("runs/solo/seed-5/eval-*/*/events/evals.rank0.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            evals[(e["phase"], e["task"], e["metric"])] = e["value"]
    losses = {}
    for phase in ("pretrain", "sft"):
        for f in ws.glob(f"runs/solo/seed-5/{phase}/*/events/metrics.rank0.jsonl"):
            for line in f.read_text().splitlines():
                m = json.loads(line)
                losses[(phase, m["step"])] = m["loss"]  # a step repeated after the resume must match too
    final = Path((next(ws.glob("runs/solo/seed-5/rl/*")) / "DONE").read_text().strip())
    weights = {p.name: p.read_bytes() for p in sorted(final.glob("model_*.pt"))}
    return {"evals": evals, "losses": losses, "weights": weights}


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_results(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for d in (straight, killed):
        d.mkdir()
        shutil.copy(STUDY, d / "study.toml")
    _finish(_run(straight))

    proc = _run(killed)
    pretrain_runs = killed / "ws" / "runs" / "solo" / "seed-5" / "pretrain"
    deadline = time.time() + 600
    while not list(pretrain_runs.glob("*/checkpoints/step_*/meta.json")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not list(pretrain_runs.glob("*/DONE")), "the kill should land inside pretraining"

    out = _finish(_run(killed))
    assert "corpus:web" in out and "reuse" in out  # data steps finished before the kill are reused
    a, b = _results(straight / "ws"), _results(killed / "ws")
    assert a["evals"] and a["evals"] == b["evals"]
    assert a["losses"] == b["losses"]
    assert a["weights"] and a["weights"] == b["weights"]
