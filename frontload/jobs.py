"""Scale-out: a study's steps as Slurm job scripts (or a Ray driver script), chained by dependency.

Training phases run as ``torchrun`` jobs under ``sbatch`` (one node, all its GPUs); data steps run
``frontload run --only STEP --data-executor slurm|ray``, which hands their datatrove pipelines to
datatrove's ``SlurmPipelineExecutor`` / ``RayPipelineExecutor``. Steps already complete in the
workspace are left out, so a resubmission after a failure continues where the last one stopped.
``submit.sh`` submits the jobs in dependency order with ``--dependency=afterok``.

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
from frontload.runner import build_plan
from frontload.study_file import Study

GPUS_PER_NODE = 8


def _job_name(step_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", step_id)


def _word(value: object) -> str:
    """``value`` as one shell word; a control character (newline, ...) cannot be quoted safely everywhere."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise FrontloadError(f"{text!r}: holds a control character; refusing to write it into a job script")
    return shlex.quote(text)


def _step_command(study: Study, step, executor: str) -> str:
    # The workspace is passed explicitly, so a `--workspace` given when the scripts were written holds in the jobs.
    args = f"{_word(study.path.resolve())} --workspace {_word(study.workspace)} --only {_word(step.id)} --no-report"
    if step.resources == "gpu":
        gpus = "${GPUS_PER_NODE:-" + str(GPUS_PER_NODE) + "}"
        return f"torchrun --nnodes=1 --nproc-per-node={gpus} -m frontload run {args}"
    return f"frontload run {args} --data-executor {executor}"


def slurm_script(study: Study, step, *, partition: str | None = None) -> str:
    """The sbatch script of one step."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=frontload-{_job_name(step.id)}",
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
        f"# step {_job_name(step.id)}: {step.kind}",
        f"# output: {_word(step.output)}",
        f"cd {_word(Path.cwd())}",
        _step_command(study, step, "slurm"),
        "",
    ]
    return "\n".join(lines)


def write_job_scripts(study: Study, *, executor: str, submit: bool, partition: str | None = None) -> int:
    """Write (and optionally submit) the job scripts of every step that is not complete."""
    plan = build_plan(study)
    jobs = plan.layout.jobs_dir
    (jobs / "logs").mkdir(parents=True, exist_ok=True)
    todo = [s for s in plan.ordered() if not s.done()]
    if executor == "slurm":
        submit_lines = [
            "#!/bin/bash",
            "# Submits every unfinished step of the study, chained with afterok.",
            "set -euo pipefail",
            'cd "$(dirname "$0")"',
        ]
        var = {}
        for i, step in enumerate(todo):
            name = f"{i:02d}-{_job_name(step.id)}.sbatch"
            atomic_write(jobs / name, slurm_script(study, step, partition=partition))
            deps = [var[d] for d in step.deps if d in var]
            dep = f"--dependency=afterok:{':'.join('$' + d for d in deps)} " if deps else ""
            var[step.id] = f"J{i}"
            submit_lines.append(f"J{i}=$(sbatch --parsable {dep}{name})")
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
    # Ray: one driver runs the data steps on a Ray cluster and the training phases with torchrun.
    lines = [
        "#!/bin/bash",
        "# Run on the Ray head node: data steps on Ray, training phases with torchrun.",
        "set -euo pipefail",
        f"cd {_word(Path.cwd())}",
    ]
    for step in todo:
        lines.append(_step_command(study, step, "ray"))
    lines.append(f"frontload report {_word(study.workspace)}")  # ingests what is new first
    atomic_write(jobs / "ray_driver.sh", "\n".join(lines) + "\n")
    os.chmod(jobs / "ray_driver.sh", 0o755)
    print(f"wrote {jobs / 'ray_driver.sh'} ({len(todo)} steps)")
    if submit:
        subprocess.run(["bash", str(jobs / "ray_driver.sh")], check=True)
    return 0
