"""Run a study on a Ray cluster: every unfinished step a Ray task that starts once the steps it reads are done.

``frontload run STUDY --executor ray`` connects to a cluster (``--ray-address``, else ``RAY_ADDRESS``,
else it starts a local instance) and submits every unfinished step at once, as a task whose
arguments are the results of its dependencies' tasks: Ray starts a step only after they finished,
and steps that do not read each other (arms, seeds, sweep points, corpora) run side by side as far
as the cluster's resources go. Each task runs the step in a process of its own, in the folder the
driver ran from (the filesystem must be shared): ``frontload run STUDY --only STEP --no-report
--data-executor ray``, under ``torchrun`` for training and evaluation. ``RAY_ADDRESS`` points the
step's datatrove pipelines at the same cluster, so they never start a second one.

A failed step's dependents never start; every other step goes on. ``jobs/logs/<step>.log`` holds a
step's output, ``jobs/ray_steps.json`` the timeline (status, node, start and end of every step,
rewritten as steps finish) and ``jobs/ray_plan.json`` what was submitted (command, resources,
dependencies); ``--dry-run`` writes only the plan and prints the waves of steps that can run together.

Resources: a training or evaluation step asks for ``GPUS_PER_NODE`` GPUs (default 8) and runs
``torchrun`` on them; ``GPUS_PER_NODE=0`` runs it on one CPU without ``torchrun``. A data step's own
process asks for ``FRONTLOAD_RAY_STEP_CPUS`` CPUs (default 0): its datatrove tasks ask Ray for
theirs, and a step that held a CPU while it waits on them could leave none for them (two filter
steps on a two-CPU cluster would wait on each other forever).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write_json
from frontload.core.workspace import step_file_name
from frontload.jobs import GPUS_PER_NODE, step_args
from frontload.runner import StudyPlan, build_plan, finish_study
from frontload.study_file import Study

PLAN_FILE = "ray_plan.json"
STEPS_FILE = "ray_steps.json"
TAIL_LINES = 30  # of a failed step's log, in the error


class StepFailed(Exception):
    """A step's process ended with an error; carries the step id and the tail of its log."""

    def __init__(self, step_id: str, message: str) -> None:
        super().__init__(message)
        self.step_id = step_id

    def __reduce__(self):  # crosses process boundaries inside Ray
        return (StepFailed, (self.step_id, self.args[0]))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise FrontloadError(f"--executor ray needs ray installed (pip install 'ray[default]'): {e}") from None
    return ray


def _gpus() -> int:
    value = os.environ.get("GPUS_PER_NODE", str(GPUS_PER_NODE))
    if not value.isdigit():
        raise FrontloadError(f"GPUS_PER_NODE={value!r}: expected a whole number of GPUs (0 trains on CPU)")
    return int(value)


def _step_cpus() -> float:
    value = os.environ.get("FRONTLOAD_RAY_STEP_CPUS", "0")
    try:
        return float(value)
    except ValueError:
        raise FrontloadError(f"FRONTLOAD_RAY_STEP_CPUS={value!r}: expected a number of CPUs") from None


def ray_tasks(study: Study, plan: StudyPlan) -> list[dict[str, Any]]:
    """The unfinished steps as Ray tasks: command, resources, dependencies among them, log file."""
    gpus, step_cpus = _gpus(), _step_cpus()
    todo = [s for s in plan.ordered() if not s.done()]
    ids = {s.id for s in todo}
    logs = plan.layout.jobs_dir / "logs"
    tasks = []
    for step in todo:
        run = ["-m", "frontload", "run", *step_args(study, step)]
        if step.resources != "gpu":
            argv, resources = ["python", *run, "--data-executor", "ray"], {"num_cpus": step_cpus, "num_gpus": 0}
        elif gpus:
            torchrun = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={gpus}"]
            argv, resources = ["python", *torchrun, *run], {"num_cpus": 1, "num_gpus": gpus}
        else:
            argv, resources = ["python", *run], {"num_cpus": 1, "num_gpus": 0}
        tasks.append(
            {
                "id": step.id,
                "kind": step.kind,
                "deps": [d for d in step.deps if d in ids],  # a complete dependency is read, not waited for
                "resources": resources,
                "argv": argv,  # "python" is the interpreter of the worker that runs it
                "log": str(logs / f"{step_file_name(step.id)}.log"),
            }
        )
    return tasks


def waves(tasks: list[dict[str, Any]]) -> list[list[str]]:
    """Steps grouped by the longest chain of dependencies before them: a wave's steps can run side by side."""
    depth: dict[str, int] = {}
    for t in tasks:  # plan order lists dependencies first
        depth[t["id"]] = 1 + max((depth[d] for d in t["deps"]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step_id, d in depth.items():
        out[d].append(step_id)
    return out


def format_waves(tasks: list[dict[str, Any]]) -> str:
    rows = waves(tasks)
    lines = [f"ray: {len(tasks)} unfinished steps in {len(rows)} waves (a wave's steps run side by side)"]
    lines += [f"  wave {i}: {', '.join(row)}" for i, row in enumerate(rows, 1)]
    return "\n".join(lines)


def _run_step(step_id: str, argv: list[str], cwd: str, log: str, env: dict[str, str], *deps: Any) -> dict[str, Any]:
    """Body of a step's Ray task (``deps`` are only waited for): run the step, return when it ran and where."""
    import ray

    argv = [sys.executable if a == "python" else a for a in argv[:1]] + argv[1:]
    start = time.time()
    # Its own process group, so that a cancelled task (Ctrl-C of the driver) stops the step's whole tree:
    # torchrun's ranks or a worker's processes, not only the process started here.
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
    end = time.time()
    if rc != 0:
        tail = "\n".join(Path(log).read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL_LINES:])
        raise StepFailed(step_id, f"{step_id} exited with status {rc} (log: {log})\n{tail}")
    return {"start": start, "end": end, "node": ray.util.get_node_ip_address()}


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's process group, SIGKILL after a grace period."""
    import signal

    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if grace is None:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster (or start a local one); True when this driver started it and must stop it."""
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
        return False
    ray.init(include_dashboard=False)
    return True


def _check_gpus(ray: Any, tasks: list[dict[str, Any]]) -> None:
    need = max((t["resources"]["num_gpus"] for t in tasks), default=0)
    most = max((n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if need > most:
        # Ray would hold such a task forever as infeasible.
        raise FrontloadError(
            f"training steps ask for GPUS_PER_NODE={need} GPUs on one node; the Ray cluster's largest node has "
            f"{most:g}; set GPUS_PER_NODE to what a node has (0 trains on CPU)"
        )


def run_on_ray(study: Study, *, address: str | None = None, dry_run: bool = False, report: bool = True) -> int:
    """Run every unfinished step of ``study`` as a Ray task that waits for its dependencies; then report."""
    plan = build_plan(study)
    jobs = plan.layout.jobs_dir
    (jobs / "logs").mkdir(parents=True, exist_ok=True)
    tasks = ray_tasks(study, plan)
    cwd = str(Path.cwd())
    atomic_write_json(jobs / PLAN_FILE, {"study": str(study.path.resolve()), "cwd": cwd, "steps": tasks})
    print(format_waves(tasks))
    print(f"wrote {jobs / PLAN_FILE}")
    if dry_run:
        return 0
    ray = _import_ray()
    started_here = _connect(ray, address)
    try:
        _check_gpus(ray, tasks)
        env = {"RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
        outcome = _submit_and_wait(ray, plan, tasks, cwd, env)
    finally:
        if started_here:
            ray.shutdown()
    failed = [s for s, r in outcome.items() if r["status"] == "failed"]
    skipped = [s for s, r in outcome.items() if r["status"] == "skipped"]
    ran = len(outcome) - len(failed) - len(skipped)
    print(f"ray: {ran} steps ran, {len(failed)} failed, {len(skipped)} not started; timeline: {jobs / STEPS_FILE}")
    for step_id in failed:
        print(f"\nfailed: {outcome[step_id]['error']}")
    if skipped:
        print(f"\nnot started (a step they need failed): {', '.join(skipped)}")
    if failed:
        return 1
    if report:
        finish_study(plan)
    return 0


def _a_dependency_failed(ray: Any, deps: list[Any]) -> bool:
    """Whether one of these tasks ended in an error. Ray hands a failed task's error to every task that
    waits on it, and may return the dependent's first: a step whose dependency crashed (a killed worker,
    not a step that exited non-zero) did not run, and is not the one that failed."""
    ready, _ = ray.wait(deps, num_returns=len(deps), timeout=0) if deps else ([], [])
    for ref in ready:
        try:
            ray.get(ref)
        except Exception:
            return True
    return False


def _submit_and_wait(
    ray: Any, plan: StudyPlan, tasks: list[dict[str, Any]], cwd: str, env: dict[str, str]
) -> dict[str, dict]:
    remote = ray.remote(_run_step)
    reused = [s.id for s in plan.ordered() if s.done()]
    log_of = {t["id"]: t["log"] for t in tasks}
    t0 = time.time()
    refs: dict[str, Any] = {}
    for t in tasks:  # plan order: a step's dependencies are submitted before it
        deps = [refs[d] for d in t["deps"]]
        refs[t["id"]] = remote.options(name=t["id"], **t["resources"]).remote(
            t["id"], t["argv"], cwd, t["log"], env, *deps
        )
    by_ref = {ref: step_id for step_id, ref in refs.items()}
    outcome: dict[str, dict] = {}
    timeline = {
        "started": datetime.datetime.fromtimestamp(t0, datetime.UTC).isoformat(timespec="seconds"),
        "reused": reused,
        "steps": outcome,
    }
    deps_of = {t["id"]: t["deps"] for t in tasks}
    try:
        while by_ref:
            # A timeout returns to Python now and then, so that Ctrl-C is seen while steps run.
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=1.0)
            for ref in ready:
                step_id = by_ref.pop(ref)
                try:
                    r = ray.get(ref)
                except Exception as e:
                    # A step whose dependency failed gets that failure back without having run.
                    cause = getattr(e, "cause", e)
                    upstream = isinstance(cause, StepFailed) and cause.step_id != step_id
                    upstream |= _a_dependency_failed(ray, [refs[d] for d in deps_of[step_id]])
                    own = isinstance(cause, StepFailed) and cause.step_id == step_id
                    if not upstream:
                        outcome[step_id] = {"status": "failed", "error": str(cause) if own else f"{step_id}: {e}"}
                        print(f"        {step_id} failed (log: {log_of[step_id]})", flush=True)
                    else:
                        outcome[step_id] = {"status": "skipped"}
                else:
                    start, end = round(r["start"] - t0, 2), round(r["end"] - t0, 2)
                    outcome[step_id] = {"status": "ran", "start": start, "end": end, "seconds": round(end - start, 2)}
                    outcome[step_id]["node"] = r["node"]
                    print(f"        {step_id} done in {end - start:.1f}s ({start:.1f}s-{end:.1f}s)", flush=True)
                outcome[step_id]["log"] = log_of[step_id]
                atomic_write_json(plan.layout.jobs_dir / STEPS_FILE, timeline)
    except KeyboardInterrupt:
        for ref in by_ref:
            ray.cancel(ref)  # not forced: the task stops its step's process group
        raise
    return outcome
