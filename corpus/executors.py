"""The datatrove executor a data step runs on: local processes, Slurm jobs or a Ray cluster.

Data stages build their datatrove pipeline and hand it to :func:`make_executor`; the study runner
chooses the kind (``frontload run --data-executor``). Slurm and Ray settings come from the
environment (``FRONTLOAD_SLURM_PARTITION``, ``FRONTLOAD_SLURM_TIME``, ``FRONTLOAD_SLURM_CPUS``), so
a study file stays the same on a laptop and on a cluster.
"""

from __future__ import annotations

import os
from typing import Any

from frontload.corpus.errors import FrontloadError

KINDS = ("local", "slurm", "ray")


def run_to_completion(executor: Any, tasks: int, logging_dir: str, poll_s: float = 30.0) -> None:
    """Run ``executor`` and return only when every task has left its completion marker.

    datatrove's Slurm executor returns as soon as the array job is submitted; a study step must not
    finish before its data exists, so it waits on the markers datatrove writes per finished task.
    """
    import time
    from pathlib import Path

    executor.run()
    markers = Path(logging_dir) / "completions"
    while sum((markers / f"{rank:05d}").exists() for rank in range(tasks)) < tasks:
        time.sleep(poll_s)


def make_executor(
    pipeline: list[Any],
    *,
    kind: str = "local",
    tasks: int = 1,
    workers: int = 1,
    logging_dir: str,
    job_name: str = "frontload",
) -> Any:
    """A datatrove executor of ``kind`` over ``pipeline``; ``run()`` blocks until every task is done."""
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir)
    if kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        partition = os.environ.get("FRONTLOAD_SLURM_PARTITION")
        if not partition:
            raise FrontloadError("--data-executor slurm needs FRONTLOAD_SLURM_PARTITION (the Slurm partition)")
        return SlurmPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=workers,
            logging_dir=logging_dir,
            job_name=job_name,
            partition=partition,
            time=os.environ.get("FRONTLOAD_SLURM_TIME", "04:00:00"),
            cpus_per_task=int(os.environ.get("FRONTLOAD_SLURM_CPUS", "4")),
        )
    if kind == "ray":
        try:
            from datatrove.executor.ray import RayPipelineExecutor
        except ImportError as e:
            raise FrontloadError(f"--data-executor ray needs ray installed ({e})") from e
        return RayPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir)
    raise FrontloadError(f"unknown data executor {kind!r} (choose from {', '.join(KINDS)})")
