"""submit.sh on a stand-in ``sbatch``: arms and seeds wait only for what they read, so they run side by side."""

import os
import re
import stat
import subprocess
from pathlib import Path

from frontload.jobs import write_job_scripts
from frontload.runner import build_plan
from frontload.study_file import load_study

TINY = Path(__file__).with_name("tiny_study.toml")

# Records each submission (its job id, then its arguments) and answers as `sbatch --parsable` does on a
# federation of clusters: "id;cluster".
FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat "$SBATCH_LOG" 2>/dev/null | wc -l) + 1 ))
echo "$n $*" >> "$SBATCH_LOG"
echo "$n;cluster"
"""


def _submitted(tmp_path: Path, study) -> tuple[dict[str, set[str]], set[str]]:
    """Run submit.sh against the stand-in: each step's direct dependencies (step ids), and the report job's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(stat.S_IRWXU)
    log = tmp_path / "sbatch.log"
    write_job_scripts(study, executor="slurm", submit=False)
    jobs = Path(study.workspace) / "jobs"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    subprocess.run(["bash", str(jobs / "submit.sh")], check=True, env=env, capture_output=True)
    step_of: dict[str, str] = {}
    deps: dict[str, set[str]] = {}
    report: set[str] = set()
    for line in log.read_text().splitlines():
        job, *args = line.split()
        after = next((a.removeprefix("--dependency=afterok:") for a in args if a.startswith("--dependency")), "")
        wait_for = {step_of[j] for j in after.split(":") if j}  # an unknown id would raise here
        script = next((a for a in args if a.endswith(".sbatch")), None)
        if script is None:
            assert "--job-name=frontload-report" in args
            report = wait_for
            continue
        step = re.search(r"--only '?([^' ]+)'?", (jobs / script).read_text()).group(1)
        step_of[job] = step
        deps[step] = wait_for
    return deps, report


def _upstream(deps: dict[str, set[str]], step: str) -> set[str]:
    seen: set[str] = set()
    todo = [step]
    while todo:
        for d in deps[todo.pop()] - seen:
            seen.add(d)
            todo.append(d)
    return seen


def test_arms_and_seeds_wait_only_for_what_they_read(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(TINY.read_text().replace("seed = 7\n", "seed = 7\nseeds = [1, 2]\n", 1))
    study = load_study(path)
    study.study.workspace = str(tmp_path / "ws")
    plan = build_plan(study)
    deps, report = _submitted(tmp_path, study)

    assert deps == {s.id: set(s.deps) for s in plan.ordered()}  # every step, chained on exactly its inputs
    assert report == set(plan.steps)  # the report waits for all
    arms = [a.name for a in study.arms]
    for step in deps:
        up = _upstream(deps, step)
        for arm in arms:
            if f":{arm}:" in step:
                others = {u for u in up for a in arms if a != arm and f":{a}:" in u}
                assert not others, f"{step} waits for another arm's {others}"
        if seed := re.search(r":s(\d+)$", step):
            assert not {u for u in up if re.search(r":s\d+$", u) and not u.endswith(f":s{seed[1]}")}, step
    # Both arms' pretraining steps continue from the seed's shared prefix.
    assert "pretrain-prefix:1:s1" in deps["pretrain:baseline:s1"] & deps["pretrain:front_loaded:s1"]
