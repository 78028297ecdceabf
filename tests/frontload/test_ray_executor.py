"""The Ray driver: a study's independent steps run at once on a local Ray cluster and end as a local run does."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frontload.runner import build_plan
from frontload.study_file import load_study

STUDY = Path(__file__).with_name("ray_study.toml")
ARMS = ("plain", "mixed")

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install -e '.[dev]')")


def _study(root: Path, edit=None):
    root.mkdir(parents=True, exist_ok=True)
    text = STUDY.read_text()
    (root / "study.toml").write_text(edit(text) if edit else text)
    study = load_study(root / "study.toml")
    study.study.workspace = str(root / "ws")
    return study


@pytest.fixture(scope="module")
def cluster():
    """A local two-CPU Ray cluster (started once: it takes seconds); training steps run on its CPUs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUS_PER_NODE", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


def _results(ws: Path) -> dict:
    """What a run ends with: every step's fingerprint, the filtered corpus, eval results, losses and weights."""
    study = load_study(ws.parent / "study.toml")
    study.study.workspace = str(ws)
    out = {f"{s.id} fingerprint": s.fingerprint for s in build_plan(study).ordered()}
    (corpus,) = (ws / "corpora" / "problems").iterdir()
    out["problems manifest"] = json.loads((corpus / "manifest.json").read_text())["account"]
    out["problems data"] = {f.name: f.read_bytes() for f in sorted((corpus / "data").glob("*"))}
    for arm in ARMS:
        (run,) = (ws / "runs" / arm / "seed-3" / "pretrain").iterdir()
        out[f"{arm} losses"] = [json.loads(line)["loss"] for line in (run / "events" / "metrics.rank0.jsonl").open()]
        final = Path((run / "DONE").read_text().strip())
        out[f"{arm} weights"] = {p.name: p.read_bytes() for p in sorted(final.glob("model_*.pt"))}
        (ev,) = (ws / "runs" / arm / "seed-3").glob("eval-*/*/events/evals.rank0.jsonl")
        out[f"{arm} evals"] = sorted((e["task"], e["metric"], e["value"]) for e in map(json.loads, ev.open()))
    return out


def _overlap(a: dict, b: dict) -> float:
    return min(a["end"], b["end"]) - max(a["start"], b["start"])


@needs_ray
@pytest.mark.slow
def test_two_arms_run_side_by_side_on_ray_and_end_as_a_local_run(tmp_path, cluster, capsys):
    from frontload.ray_driver import run_on_ray

    study = _study(tmp_path / "ray")
    assert run_on_ray(study, report=False) == 0
    out = capsys.readouterr().out
    assert "wave 4: pretrain:plain:s3, pretrain:mixed:s3" in out
    timeline = json.loads((tmp_path / "ray" / "ws" / "jobs" / "ray_steps.json").read_text())["steps"]
    assert {r["status"] for r in timeline.values()} == {"ran"} and len(timeline) == 10
    steps = {arm: {s: r for s, r in timeline.items() if f":{arm}:" in s} for arm in ARMS}
    best = max(_overlap(a, b) for a in steps["plain"].values() for b in steps["mixed"].values())
    print(f"\nthe two arms' steps overlapped for {best:.1f}s: {json.dumps(timeline, indent=1)}")
    assert best > 0
    # Every step started only after the steps it reads had finished.
    for step in build_plan(study).ordered():
        for dep in step.deps:
            assert timeline[dep]["end"] <= timeline[step.id]["start"], (dep, step.id)
    # The filter step's datatrove pipelines joined this cluster rather than starting one of their own.
    log = (tmp_path / "ray" / "ws" / "jobs" / "logs" / "corpus-problems.log").read_text()
    assert f"Connecting to existing Ray cluster at address: {cluster}" in log
    assert "Started a local Ray instance" not in log

    local = tmp_path / "local"
    _study(local)
    proc = subprocess.run(
        [sys.executable, "-m", "frontload", "run", "study.toml", "--no-report"],
        cwd=local,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    on_ray, here = _results(tmp_path / "ray" / "ws"), _results(local / "ws")
    assert on_ray.keys() == here.keys()
    assert {k: v for k, v in on_ray.items() if here[k] != v} == {}


@needs_ray
def test_a_failed_step_stops_its_dependents_and_names_its_log(tmp_path, cluster, capsys):
    from frontload.ray_driver import run_on_ray

    # A vocabulary smaller than the corpus's characters: SentencePiece refuses it in the tokenizer step.
    study = _study(tmp_path, lambda t: t.replace("vocab_size = 400", "vocab_size = 300").replace("filters = {", "#"))
    assert run_on_ray(study) == 1
    out = capsys.readouterr().out
    timeline = json.loads((tmp_path / "ws" / "jobs" / "ray_steps.json").read_text())["steps"]
    status = {s: r["status"] for s, r in timeline.items()}
    assert status.pop("tokenizer") == "failed"
    assert {s for s, v in status.items() if v == "ran"} == {"task:heldout", "corpus:web", "corpus:problems"}
    assert {v for s, v in status.items() if s.startswith(("shards", "pretrain", "eval"))} == {"skipped"}
    # The error names the step, its log and what went wrong there; no report is made.
    assert re.search(r"failed: tokenizer exited with status 2 \(log: .*tokenizer\.log\)", out)
    assert "Vocabulary size is smaller than required_chars" in out
    assert "6 failed" not in out and "3 steps ran, 1 failed, 6 not started" in out
    assert not (tmp_path / "ws" / "frontload.duckdb").exists()


@needs_ray
def test_trace_sampling_runs_its_tasks_on_ray_and_writes_what_a_local_run_writes(tmp_path, cluster):
    from frontload.synth.generate import GenerateConfig, generate_traces
    from frontload.synth.sources import write_problems

    write_problems(tmp_path / "problems", families=["arithmetic", "logic"], n=8, seed=4)
    cfg = {"server": "dummy", "rollouts": 2, "tasks": 2}
    here = generate_traces(tmp_path / "problems", tmp_path / "local", GenerateConfig(**cfg))
    there = generate_traces(tmp_path / "problems", tmp_path / "ray", GenerateConfig(**cfg), executor="ray")
    # datatrove saves the executor's fields: nodes_per_task is the Ray executor's, start_method the local one's.
    executor = {k: json.loads((tmp_path / k / "logs" / "executor.json").read_text()) for k in ("ray", "local")}
    assert "nodes_per_task" in executor["ray"] and "start_method" in executor["local"]
    assert (there.fingerprint, there.account, there.counts) == (here.fingerprint, here.account, here.counts)
    # Requests run concurrently inside a task, so a file's lines come in the order answers arrived.
    for f in sorted((tmp_path / "local" / "data").glob("*.jsonl")):
        lines = sorted(f.read_text().splitlines())
        assert sorted((tmp_path / "ray" / "data" / f.name).read_text().splitlines()) == lines, f.name


def test_ray_dry_run_writes_the_plan_and_needs_no_cluster(tmp_path, capsys, monkeypatch):
    from frontload.cli import main

    monkeypatch.setenv("GPUS_PER_NODE", "4")
    _study(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "study.toml", "--executor", "ray", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10 unfinished steps in 5 waves" in out and "wave 1: task:heldout, corpus:web, corpus:problems" in out
    plan = {s["id"]: s for s in json.loads((tmp_path / "ws" / "jobs" / "ray_plan.json").read_text())["steps"]}
    train = plan["pretrain:mixed:s3"]
    assert train["deps"] == ["shards:problems", "shards:web"] and train["resources"] == {"num_cpus": 1, "num_gpus": 4}
    assert train["argv"][:5] == ["python", "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=4"]
    data = plan["corpus:problems"]
    assert data["argv"][-2:] == ["--data-executor", "ray"] and data["resources"]["num_gpus"] == 0
    assert not (tmp_path / "ws" / "corpora").exists() and not (tmp_path / "ws" / "jobs" / "ray_steps.json").exists()
    shutil.rmtree(tmp_path / "ws")


class _CrashingRay:
    """Stands in for Ray: the tokenizer's worker dies (an error that is not a step's own non-zero exit),
    every task after it gets that error back, and Ray returns the latest-submitted ready task first."""

    def __init__(self):
        self.refs = []

    def remote(self, fn):
        outer = self

        class Task:
            def options(self, name, **resources):
                return self

            def remote(self, step_id, argv, cwd, log, env, *deps):
                ref = (step_id, step_id == "tokenizer" or any(crashed for _, crashed in deps))
                outer.refs.append(ref)
                return ref

        return Task()

    def wait(self, refs, num_returns, timeout):
        ready = sorted(refs, key=self.refs.index, reverse=True)[:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref):
        if ref[1]:
            raise RuntimeError("The worker died unexpectedly while executing this task")
        return {"start": 0.0, "end": 1.0, "node": "127.0.0.1"}


def test_the_step_whose_worker_crashed_is_the_one_failed_and_its_dependents_did_not_start(tmp_path):
    from frontload.ray_driver import _submit_and_wait, ray_tasks

    study = _study(tmp_path)
    plan = build_plan(study)
    plan.layout.jobs_dir.mkdir(parents=True)
    outcome = _submit_and_wait(_CrashingRay(), plan, ray_tasks(study, plan), str(tmp_path), {})
    status = {s: r["status"] for s, r in outcome.items()}
    assert status.pop("tokenizer") == "failed" and "worker died" in outcome["tokenizer"]["error"]
    assert {s for s, v in status.items() if v == "ran"} == {"task:heldout", "corpus:web", "corpus:problems"}
    assert {v for s, v in status.items() if s.startswith(("shards", "pretrain", "eval"))} == {"skipped"}
