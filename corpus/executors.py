"""Run a data step's datatrove pipeline on local processes, Slurm jobs or a Ray cluster.

Data stages build their pipeline and hand it to :func:`run_pipeline`; the study runner chooses the
kind (``frontload run --data-executor``). A Ray pipeline joins the cluster ``RAY_ADDRESS`` names
(the study's Ray driver sets it for every step it starts), so it never starts a second one. Slurm
settings come from the environment (``FRONTLOAD_SLURM_PARTITION``, ``FRONTLOAD_SLURM_TIME``,
``FRONTLOAD_SLURM_CPUS``), so a study file stays the same on a laptop and on a cluster. Every kind
returns only when the work is done, and a Ray pipeline with a failed task raises.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from frontload.core.errors import FrontloadError

KINDS = ("local", "slurm", "ray")


def _no_traceback_for_user_errors(record: dict[str, Any]) -> None:
    exc = record["exception"]
    if exc is not None and isinstance(exc.value, FrontloadError):
        record["exception"] = None


def quiet_user_errors() -> None:
    """Log a FrontloadError raised inside a datatrove task as its one-line message, without a traceback.

    datatrove logs every failing task with ``logger.exception``: for a bad input that names its file
    and line, dozens of traceback lines would bury the message. Other exceptions are bugs and keep it.
    """
    from loguru import logger

    logger.configure(patcher=_no_traceback_for_user_errors)


def run_pipeline(
    pipeline: list[Any],
    *,
    kind: str = "local",
    tasks: int = 1,
    workers: int = 1,
    logging_dir: str,
    job_name: str = "frontload",
    poll_s: float = 30.0,
) -> None:
    """Run ``pipeline`` as ``tasks`` datatrove tasks on an executor of ``kind`` and wait for it."""
    quiet_user_errors()
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        # fork, not datatrove's default forkserver: a caller's script without a __main__ guard would
        # otherwise re-run itself in every worker, and fork starts in milliseconds.
        start = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, start_method=start
        ).run()
    elif kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        partition = os.environ.get("FRONTLOAD_SLURM_PARTITION")
        if not partition:
            raise FrontloadError("--data-executor slurm needs FRONTLOAD_SLURM_PARTITION (the Slurm partition)")
        SlurmPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=logging_dir,
            job_name=job_name,
            partition=partition,
            time=os.environ.get("FRONTLOAD_SLURM_TIME", "04:00:00"),
            cpus_per_task=int(os.environ.get("FRONTLOAD_SLURM_CPUS", "4")),
        ).run()
        # datatrove's Slurm executor returns once the array job is submitted; a study step must not
        # finish before its data exists, so wait on the marker datatrove writes per finished task.
        markers = Path(logging_dir) / "completions"
        while sum((markers / f"{rank:05d}").exists() for rank in range(tasks)) < tasks:
            time.sleep(poll_s)
    elif kind == "ray":
        try:
            from datatrove.executor.ray import RayPipelineExecutor
        except ImportError as e:
            raise FrontloadError(f"--data-executor ray needs ray installed ({e})") from e
        RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir).run()
        # datatrove's Ray executor logs a task that failed (after its retries) and returns; a step must
        # not go on without its data.
        missing = [r for r in range(tasks) if not (Path(logging_dir) / "completions" / f"{r:05d}").exists()]
        if missing:
            raise FrontloadError(f"{job_name}: Ray tasks {missing} failed; see {Path(logging_dir) / 'logs'}")
    else:
        raise FrontloadError(f"unknown data executor {kind!r} (choose from {', '.join(KINDS)})")
