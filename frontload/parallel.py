"""Run a study's independent steps at once on this machine, in worker processes, following the step graph.

A study is a wide graph: every seed and arm trains and evaluates independently of the others once the
shared data exists. ``frontload run --jobs N`` (or ``[study] jobs = N``) keeps N worker processes busy:
a step starts as soon as every step it depends on is complete. With ``[study] threads`` set, each
worker uses that many threads, so N = cores / threads fills the machine; on the default study's
one-thread model, two jobs on two cores halve the wall time.

The results are the same as a sequential run, bit for bit: every step reads only its dependencies'
outputs and pins its own seed, and each worker pins the same thread count (test:
``test_parallel_run_equals_sequential``). Each step's output (progress lines, datatrove logs) goes to
``<workspace>/logs/<step>-<fingerprint>.log``, so that two steps' lines do not interleave; the console shows when
each step starts and ends, and, when one fails, the tail of its log; ``logs/timeline.json`` keeps
when each step ran (a rerun adds to it). On a machine with CUDA, training and evaluation steps run
one at a time (each would take the first GPU); data steps still run beside them. A failure stops new steps from
starting; the steps already running finish and are kept, so the next run resumes after them.
An interrupt (Ctrl-C, or SIGINT or SIGTERM sent to this process alone, as a scheduler does) stops the
running steps too. Each worker leads its own process group, so a terminal's Ctrl-C reaches the
runner only, and the runner sends one SIGINT to each worker's group: a step's own clean-up runs
(datatrove stops its vLLM server). After a grace period every worker's group is killed, with
whatever the step started. A stopped step is not marked done, so the next run starts it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from multiprocessing.connection import wait as wait_for_exit
from pathlib import Path
from typing import TYPE_CHECKING

from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write_json
from frontload.core.workspace import step_file_name

if TYPE_CHECKING:
    from frontload.steps import Step, StudyPlan

LOG_TAIL = 20  # lines of a failed step's log shown on the console
TIMELINE = "timeline.json"  # in <workspace>/logs: step, start, end (Unix seconds), ok
# How long an interrupted worker may clean up before its process group is killed: datatrove gives a
# vLLM server 10 s to stop, then its start-up task 10 s more.
STOP_GRACE_S = 30.0


def log_path(plan: StudyPlan, step_id: str) -> Path:
    """Where a step's output goes when it runs in a worker: one file per step, named after its id and
    fingerprint (two studies sharing a workspace can run the same step id with other settings)."""
    return plan.ws / "logs" / f"{step_file_name(step_id)}-{plan[step_id].fingerprint[:8]}.log"


def _tail(path: Path, n: int = LOG_TAIL) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("        | " + line for line in lines[-n:])


def _chain_lengths(todo: dict[str, Step]) -> dict[str, int]:
    """For each step, the most steps that still wait on it one after another (itself included).

    Starting the step with the longest chain behind it first keeps every worker busy to the end: a
    seed's shared prefix goes before another seed's evaluation, which nothing waits for.
    """
    after: dict[str, list[str]] = {sid: [] for sid in todo}
    for sid, step in todo.items():
        for dep in step.deps:
            if dep in after:
                after[dep].append(sid)
    length: dict[str, int] = {}

    def chain(sid: str) -> int:
        if sid not in length:
            length[sid] = 1 + max((chain(n) for n in after[sid]), default=0)
        return length[sid]

    for sid in todo:
        chain(sid)
    return length


def _gpu_slots(jobs: int) -> int:
    """How many training or evaluation steps may run at once: one per machine with CUDA (they would
    share its first GPU), else ``jobs`` (on a CPU each worker has its own threads)."""
    import torch

    return 1 if torch.cuda.is_available() else jobs


def _stop_workers(workers: list, grace: float = STOP_GRACE_S) -> None:
    """SIGINT to each worker's process group (the step's clean-up runs), then SIGKILL to every group,
    which also ends what a step started and left behind (a server, a datatrove task)."""
    for proc in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    pending, deadline = [p.sentinel for p in workers], time.time() + grace
    while pending and time.time() < deadline:
        done = wait_for_exit(pending, timeout=deadline - time.time())
        pending = [s for s in pending if s not in done]
    for proc in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handlers() -> dict:
    """The SIGINT and SIGTERM handlers to restore afterwards (one set outside Python reads as the default)."""
    return {sig: signal.getsignal(sig) or signal.SIG_DFL for sig in (signal.SIGINT, signal.SIGTERM)}


def run_parallel(
    plan: StudyPlan, steps: list[Step], jobs: int, worker: Callable[..., float], *, data_executor: str = "local"
) -> None:
    """Run ``steps`` on ``jobs`` worker processes, each as soon as its dependencies are done.

    ``worker(study, step_id, log, threads, data_executor)`` runs one step in a worker process with its
    output written to ``log`` (a module-level function, so that it travels to a spawned process by
    name). Dependencies outside ``steps`` must already be complete (as with ``--only``). Raises
    :class:`FrontloadError` naming the failed steps once the running ones have finished.
    """
    todo = {s.id: s for s in steps if not s.done()}
    for step in steps:
        if step.id not in todo:
            print(f"        {step.id:<32} reuse", flush=True)
    waiting = {s.id: [d for d in s.deps if d not in todo and not plan[d].done()] for s in todo.values()}
    waiting = {sid: deps for sid, deps in waiting.items() if deps}
    if waiting:
        need = "; ".join(f"{sid} needs {', '.join(deps)}" for sid, deps in waiting.items())
        raise FrontloadError(f"{need}: run those first (or run without --only)")
    (plan.ws / "logs").mkdir(parents=True, exist_ok=True)
    threads = plan.study.study.threads
    order = sorted(todo, key=_chain_lengths(todo).__getitem__, reverse=True)  # stable: plan order breaks ties
    total = len(order)
    running: dict[Future, tuple[str, float]] = {}
    # When each step ran, for a person (or a test) to see what overlapped; a rerun adds to it.
    timeline_file = plan.ws / "logs" / TIMELINE
    timeline: list[dict] = json.loads(timeline_file.read_text()) if timeline_file.exists() else []
    gpu_slots = _gpu_slots(jobs)
    failed: list[str] = []
    finished = 0
    # A scheduler's SIGTERM stops the steps like Ctrl-C does (only the main thread may set a handler).
    handlers = _handlers() if _in_main_thread() else None
    if handlers:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        # spawn, not fork: torch and vLLM start threads that a forked child would inherit in a bad state.
        # Each worker leads its own process group: a terminal's Ctrl-C reaches the runner, which relays it.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=os.setpgrp) as pool:
            try:
                while order or running:
                    if not failed:
                        for sid in [s for s in order if all(d not in todo for d in todo[s].deps)]:
                            if len(running) >= jobs:
                                break
                            on_gpu = sum(todo[r].resources == "gpu" for r, _ in running.values())
                            if todo[sid].resources == "gpu" and on_gpu >= gpu_slots:
                                continue
                            order.remove(sid)
                            log = str(log_path(plan, sid))
                            future = pool.submit(worker, plan.study, sid, log, threads, data_executor)
                            running[future] = (sid, time.time())
                            print(f"  start {sid}", flush=True)
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        sid, t0 = running.pop(future)
                        error = future.exception()
                        finished += 1
                        timeline.append({"step": sid, "start": t0, "end": time.time(), "ok": error is None})
                        atomic_write_json(timeline_file, timeline)
                        if error is None:
                            del todo[sid]
                            print(f"[{finished:>2}/{total}] {sid:<32} done in {time.time() - t0:.1f}s", flush=True)
                            continue
                        failed.append(sid)
                        print(f"[{finished:>2}/{total}] {sid:<32} FAILED: {error}", flush=True)
                        print(f"        log: {log_path(plan, sid)}", flush=True)
                        print(_tail(log_path(plan, sid)), flush=True)
            except KeyboardInterrupt:
                if handlers:  # a second Ctrl-C or SIGTERM must not cut the stop short and leave workers running
                    for sig in handlers:
                        signal.signal(sig, signal.SIG_IGN)
                print(f"  interrupted: stopping {len(running)} running step(s)", flush=True)
                # The pool's own processes (ProcessPoolExecutor has no public list before Python 3.14's
                # terminate_workers); shutdown() forgets them.
                workers = list((pool._processes or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                _stop_workers(workers)
                raise
    finally:
        for sig, handler in (handlers or {}).items():
            signal.signal(sig, handler)
    if failed:
        left = [s for s in todo if s not in failed]
        raise FrontloadError(
            f"{len(failed)} step(s) failed: {', '.join(failed)} (logs in {plan.ws / 'logs'}); "
            f"{len(left)} step(s) not run; finished steps are kept, so a rerun resumes after them"
        )
