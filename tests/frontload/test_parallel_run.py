"""``frontload run --jobs 2`` runs independent steps at once and ends with what a sequential run gives."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = Path(__file__).with_name("tiny_study.toml")


def _run(cwd: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "frontload", "run", "study.toml", "--no-report", *extra],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def _results(ws: Path) -> dict:
    """Every evaluation value, every logged loss and every final weight file, keyed by where it lives."""
    out = {}
    for f in sorted(ws.glob("runs/*/seed-*/*/*/events/*.rank0.jsonl")):
        run = f.relative_to(ws).parts[1:4]  # arm, seed, phase: the fingerprint folder is the same by content
        for i, line in enumerate(f.read_text().splitlines()):
            e = json.loads(line.replace(str(ws), "<workspace>"))
            # What was computed, not when or how fast (run ids, clock times, seconds and rates).
            out[(*run, f.name, i)] = {k: v for k, v in e.items() if k not in ("run_id", "t") and k[-2:] != "_s"}
    for done in sorted(ws.glob("runs/*/seed-*/*/*/DONE")):
        final = Path(done.read_text().strip())
        for p in sorted(final.glob("model_*.pt")):
            out[(*done.relative_to(ws).parts[1:4], p.name)] = p.read_bytes()
    return out


def _run_of(step_id: str) -> tuple[str, str] | None:
    """(arm, seed) of a training or evaluation step id such as ``eval:baseline:sft:s1``."""
    parts = step_id.split(":")
    return (parts[1], parts[-1]) if parts[0] in ("pretrain", "sft", "rl", "eval") else None


@pytest.mark.slow
def test_parallel_run_equals_sequential_and_overlaps(tmp_path):
    text = TINY.read_text().replace("seed = 7\n", "seed = 7\nseeds = [1, 2]\nthreads = 1\n", 1)
    assert "seeds = [1, 2]" in text
    for name in ("sequential", "parallel"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.toml").write_text(text)
    _run(tmp_path / "sequential")
    out = _run(tmp_path / "parallel", "--jobs", "2")

    ws = tmp_path / "parallel" / "ws"
    timeline = json.loads((ws / "logs" / "timeline.json").read_text())
    assert all(t["ok"] for t in timeline) and len(timeline) >= 20
    assert "start pretrain:front_loaded:s2" in out
    assert next((ws / "logs").glob("pretrain-front_loaded-s2-*.log")).stat().st_size  # the step's own output
    # Steps of different seeds (or arms) ran at the same time, and no step started before its inputs.
    spans = {t["step"]: (t["start"], t["end"]) for t in timeline}
    overlapping = [
        (a, b) for a in spans for b in spans if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    assert any(_run_of(a) and _run_of(b) and _run_of(a) != _run_of(b) for a, b in overlapping), overlapping
    assert spans["sft:baseline:s1"][0] >= spans["pretrain:baseline:s1"][1]

    seq, par = _results(tmp_path / "sequential" / "ws"), _results(ws)
    assert seq.keys() == par.keys() and any(str(k[-1]).startswith("model_") for k in seq)
    assert [k for k in seq if seq[k] != par[k]] == []


def test_a_failed_step_stops_what_needs_it_and_shows_its_log(tmp_path):
    # A vocabulary smaller than the corpora's characters: SentencePiece refuses it in the tokenizer step.
    (tmp_path / "study.toml").write_text(TINY.read_text().replace("vocab_size = 600", "vocab_size = 256"))
    proc = subprocess.run(
        [sys.executable, "-m", "frontload", "run", "study.toml", "--no-report", "--jobs", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "tokenizer" in proc.stdout and "FAILED" in proc.stdout
    # The console shows the error, then the tail of the step's log, which holds the traceback.
    assert proc.stdout.count("byte fallback alone needs 256 pieces") >= 2 and "| Traceback" in proc.stdout
    assert "1 step(s) failed: tokenizer" in proc.stderr and "finished steps are kept" in proc.stderr
    ws = tmp_path / "ws"
    timeline = {t["step"]: t["ok"] for t in json.loads((ws / "logs" / "timeline.json").read_text())}
    assert timeline["tokenizer"] is False and timeline["corpus:web"] is True
    assert not any(s.startswith(("shards", "pretrain", "sft", "eval")) for s in timeline)  # never started
    assert not (ws / "frontload.duckdb").exists()


def test_jobs_must_be_a_positive_number(tmp_path):
    shutil.copy(TINY, tmp_path / "study.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "frontload", "run", "study.toml", "--jobs", "0", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "--jobs" in proc.stderr and "at least 1" in proc.stderr


def test_an_error_that_cannot_cross_back_from_a_worker_is_made_one_that_can():
    # ConfigError(key, message) pickles but cannot be rebuilt in the parent; ProcessPoolExecutor would then
    # call the whole pool broken and kill the steps running beside the one that failed.
    import pickle

    from frontload.core.config import ConfigError
    from frontload.runner import portable_error

    original = ConfigError("lr", "must be positive")
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(original))
    back = pickle.loads(pickle.dumps(portable_error(original)))
    assert "lr" in str(back) and "must be positive" in str(back)


def test_cluster_jobs_run_their_one_step_without_a_pool(tmp_path):
    # A study's `jobs` is for one machine: a Slurm job or Ray task must not start a pool for its one step.
    from frontload.jobs import step_args
    from frontload.runner import build_plan
    from frontload.study_file import load_study

    study = load_study(Path(__file__).parents[2] / "frontload" / "studies" / "default.toml", workspace=str(tmp_path))
    assert study.study.jobs == 2
    args = step_args(study, build_plan(study)["sft:baseline:s1"])
    assert args[args.index("--jobs") + 1] == "1"


# Stands in for run_step_logged: notes its pid, then works far longer than any test waits.
_SLOW_STEPS = """
import os, sys, time

from frontload.parallel import run_parallel
from frontload.runner import build_plan
from frontload.study_file import load_study


def slow_step(study, step_id, log, threads, data_executor):
    mark = os.path.join(sys.argv[2], str(os.getpid()))
    open(mark, "w").close()
    try:
        time.sleep(300)
    except KeyboardInterrupt:
        os.rename(mark, mark + ".interrupted")  # the step saw the interrupt: its clean-up could run
        raise


if __name__ == "__main__":
    plan = build_plan(load_study(sys.argv[1]))
    run_parallel(plan, [s for s in plan.ordered() if not s.deps][:2], 2, slow_step)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be collected


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "Ctrl-C"])
def test_an_interrupt_sent_to_the_runner_alone_stops_its_running_steps(tmp_path, sig):
    # A scheduler's SIGTERM or `kill -INT` reaches the runner alone, which used to wait for the running
    # steps to end (here: five minutes) or leave them running. Ctrl-C in a terminal reaches the runner's
    # whole process group; the workers lead their own, so each step is interrupted once, by the runner.
    import contextlib
    import signal
    import time

    shutil.copy(TINY, tmp_path / "study.toml")
    (tmp_path / "slow_steps.py").write_text(_SLOW_STEPS)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "slow_steps.py", "study.toml", str(marks)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    workers = []
    try:
        deadline = time.time() + 120
        while len(list(marks.iterdir())) < 2:
            assert proc.poll() is None and time.time() < deadline, "the two steps did not start"
            time.sleep(0.2)
        workers = [int(p.name) for p in marks.iterdir()]
        sent = time.time()
        if sig == "Ctrl-C":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(getattr(signal, sig))
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "interrupted: stopping 2 running step(s)" in out
        # Interrupted (each step saw KeyboardInterrupt), not only killed at the end of the grace period.
        assert sorted(p.name for p in marks.iterdir()) == sorted(f"{pid}.interrupted" for pid in workers)
        assert time.time() - sent < 20
        time.sleep(1)
        assert [pid for pid in workers if _alive(pid)] == []
    finally:
        proc.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
