"""Scale-out on Slurm: a study's steps as job scripts, chained by dependency.

Training phases run as ``torchrun`` jobs under ``sbatch`` (one node, all its GPUs); data steps run
``frontload run --only STEP --data-executor slurm``, which hands their datatrove pipelines to
datatrove's ``SlurmPipelineExecutor``. Steps already complete in the workspace are left out, so a
resubmission after a failure continues where the last one stopped. ``submit.sh`` submits the jobs
in dependency order with ``--dependency=afterok`` on exactly the steps each one reads, so steps that
do not depend on each other (arms, seeds) wait for nothing but their own inputs and run side by side.
Ray runs a study through a driver instead (:mod:`frontload.ray_driver`); it shares :func:`step_args`.

Every value that reaches a script (paths, step ids) passes through :func:`_word`, which shell-quotes
it and refuses line breaks and other control characters (a comment or an ``#SBATCH`` line cannot
quote them). Names are already checked when the study loads; this is the second gate. Jobs start in
the folder ``frontload`` was run from, so relative workspaces mean the same thing inside them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write
from frontload.core.workspace import step_file_name
from frontload.runner import build_plan
from frontload.study_file import Study

GPUS_PER_NODE = 8


def _word(value: object) -> str:
    """``value`` as one shell word; a control character (newline, ...) cannot be quoted safely everywhere."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise FrontloadError(f"{text!r}: holds a control character; refusing to write it into a job script")
    return shlex.quote(text)


def step_args(study: Study, step) -> list[str]:
    """The ``frontload run`` arguments that run one step as a job of its own (Slurm job or Ray task)."""
    # The workspace is passed explicitly, so a `--workspace` given when the jobs were written holds in them.
    # --jobs 1: the job is the unit of concurrency here; a study's `jobs` is for running on one machine.
    args = [str(study.path.resolve()), "--workspace", str(study.workspace), "--only", step.id, "--no-report"]
    return [*args, "--jobs", "1"]


def _step_command(study: Study, step, executor: str) -> str:
    args = " ".join(_word(a) for a in step_args(study, step))
    if step.resources == "gpu":
        gpus = "${GPUS_PER_NODE:-" + str(GPUS_PER_NODE) + "}"
        return f"torchrun --nnodes=1 --nproc-per-node={gpus} -m frontload run {args}"
    return f"frontload run {args} --data-executor {executor}"


def slurm_script(study: Study, step, *, partition: str | None = None) -> str:
    """The sbatch script of one step."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=frontload-{step_file_name(step.id)}",
        # Relative to where sbatch runs (submit.sh runs it in the jobs folder): no path to quote here.
        "#SBATCH --output=logs/%x-%j.out",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
    ]
    if step.resources == "gpu":
        lines += [f"#SBATCH --gpus-per-node={GPUS_PER_NODE}", "#SBATCH --cpus-per-task=64", "#SBATCH --exclusive"]
    else:
        lines += ["#SBATCH --cpus-per-task=4"]
    if partition:
        if not re.fullmatch(r"[A-Za-z0-9_.,-]+", partition):
            raise FrontloadError(f"--partition {partition!r}: expected a Slurm partition name (letters, digits, _.,-)")
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "set -euo pipefail",
        f"# step {step_file_name(step.id)}: {step.kind}",
        f"# output: {_word(step.output)}",
        f"cd {_word(Path.cwd())}",
        _step_command(study, step, "slurm"),
        "",
    ]
    return "\n".join(lines)


def write_job_scripts(study: Study, *, executor: str, submit: bool, partition: str | None = None) -> int:
    """Write (and optionally submit) the Slurm job scripts of every step that is not complete.

    Ray runs a study through its own driver (:mod:`frontload.ray_driver`), not through scripts.
    """
    if executor != "slurm":
        raise FrontloadError(f"job scripts are written for Slurm only, not {executor!r}")
    plan = build_plan(study)
    jobs = plan.layout.jobs_dir
    (jobs / "logs").mkdir(parents=True, exist_ok=True)
    todo = [s for s in plan.ordered() if not s.done()]
    submit_lines = [
        "#!/bin/bash",
        "# Submits every unfinished step of the study, chained with afterok.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]
    var = {}
    for i, step in enumerate(todo):
        name = f"{i:02d}-{step_file_name(step.id)}.sbatch"
        atomic_write(jobs / name, slurm_script(study, step, partition=partition))
        deps = [var[d] for d in step.deps if d in var]
        dep = f"--dependency=afterok:{':'.join('$' + d for d in deps)} " if deps else ""
        var[step.id] = f"J{i}"
        # `--parsable` answers "id" or, on a federation of clusters, "id;cluster": a dependency takes the id.
        submit_lines += [f"J{i}=$(sbatch --parsable {dep}{name})", f"J{i}=${{J{i}%%;*}}"]
    report_deps = ":".join("$" + v for v in var.values())
    report = f"cd {_word(Path.cwd())} && frontload report {_word(study.workspace)}"  # ingests what is new first
    dep = f"--dependency=afterok:{report_deps} " if report_deps else ""
    submit_lines.append(f"sbatch {dep}--job-name=frontload-report --wrap {shlex.quote(report)}")
    atomic_write(jobs / "submit.sh", "\n".join(submit_lines) + "\n")
    os.chmod(jobs / "submit.sh", 0o755)
    print(f"wrote {len(todo)} job scripts and {jobs / 'submit.sh'}")
    if submit:
        subprocess.run(["bash", str(jobs / "submit.sh")], check=True)
    return 0
