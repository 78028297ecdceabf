"""The study runner: ``frontload run study.toml`` builds what is missing and reuses what exists.

A study becomes a list of steps in dependency order (corpora, tokenizer, shard sets, evaluation
tasks, and per arm: pretraining, SFT, RL and an evaluation after each phase). Every step has a
fingerprint of its inputs and config, and its output lives in a folder named by that fingerprint,
so a changed setting re-runs exactly the steps downstream of it and nothing else.

Invariants:
- A data or evaluation step writes into ``<out>.partial`` and renames it into place when complete,
  so an output folder is complete or absent.
- A training step works in its run folder and resumes from its last checkpoint; it is complete
  when ``DONE`` names its final checkpoint.
- A rerun after a kill continues from the last completed step or checkpoint and ends with the same
  results as an uninterrupted run.
"""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontload.core.config import as_dict
from frontload.core.fingerprint import atomic_write, atomic_write_json, fingerprint
from frontload.study_file import Study

DONE = "DONE"


@dataclass(kw_only=True)
class Step:
    """One unit of work of a study, complete or absent."""

    id: str  # e.g. "shards:web", "pretrain:baseline", "eval:front_loaded:sft"
    kind: str  # corpus, tokenizer, shards, task, pretrain, sft, rl, eval
    fingerprint: str
    output: Path
    deps: list[str] = field(default_factory=list)
    action: Callable[[Path], Any] | None = None  # builds the output into the given folder
    atomic: bool = True  # build in <output>.partial then rename; else resume in place
    resources: str = "cpu"  # "cpu" data step or "gpu" training step (for scale-out job scripts)

    def done(self) -> bool:
        if self.atomic:
            return self.output.exists()
        return (self.output / DONE).exists()

    def status(self) -> str:
        if self.done():
            return "reuse"
        partial = self.output if not self.atomic else self.output.with_name(self.output.name + ".partial")
        return "resume" if partial.exists() else "run"


class StudyPlan:
    """The steps of a study, with the paths later steps read from earlier ones."""

    def __init__(self, study: Study, data_executor: str = "local") -> None:
        self.study = study
        self.data_executor = data_executor  # datatrove executor for data steps: local, slurm or ray
        self.ws = study.workspace
        self.steps: dict[str, Step] = {}

    def add(self, step: Step) -> Step:
        self.steps[step.id] = step
        return step

    def __getitem__(self, step_id: str) -> Step:
        return self.steps[step_id]

    def ordered(self) -> list[Step]:
        return list(self.steps.values())


@functools.cache
def _environment_fingerprint() -> str:
    # Packaged text depends on what is installed and on how it is picked; this keeps the web corpus
    # keyed by both cheaply.
    from frontload.corpus.packaged_text import CONTENT_VERSION

    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    return fingerprint(sys.version_info[:2], names, CONTENT_VERSION)


def build_plan(study: Study, data_executor: str = "local") -> StudyPlan:
    """Turn a study into its steps, fingerprints and output folders (nothing runs)."""
    from frontload import steps as S  # the step actions; imported here to keep this module light

    plan = StudyPlan(study, data_executor=data_executor)
    ws = plan.ws
    seed = study.study.seed

    # Evaluation tasks come first: decontamination of every training corpus checks against them.
    for task in study.eval.tasks:
        fp = fingerprint("task", as_dict(task))
        plan.add(
            Step(
                id=f"task:{task.name}",
                kind="task",
                fingerprint=fp,
                output=ws / "tasks" / task.name / fp,
                action=S.task_action(study, task),
            )
        )
    task_ids = [f"task:{t.name}" for t in study.eval.tasks]

    for name, corpus in study.corpora.items():
        env = _environment_fingerprint() if corpus.source.kind == "packaged_text" else None
        decontam = bool(corpus.filters and corpus.filters.get("decontaminate"))
        task_fps = [plan[t].fingerprint for t in task_ids] if decontam else []
        fp = fingerprint("corpus", as_dict(corpus), seed, env, task_fps)
        plan.add(
            Step(
                id=f"corpus:{name}",
                kind="corpus",
                fingerprint=fp,
                output=ws / "corpora" / name / fp,
                deps=task_ids if decontam else [],
                action=S.corpus_action(plan, name, corpus),
            )
        )

    tok_fp = fingerprint(
        "tokenizer", as_dict(study.tokenizer), [plan[f"corpus:{c}"].fingerprint for c in study.tokenizer.train_on]
    )
    plan.add(
        Step(
            id="tokenizer",
            kind="tokenizer",
            fingerprint=tok_fp,
            output=ws / "tokenizer" / tok_fp,
            deps=[f"corpus:{c}" for c in study.tokenizer.train_on],
            action=S.tokenizer_action(plan),
        )
    )

    def shards(name: str, sft: bool) -> str:
        step_id = f"shards:{name}" + (":sft" if sft else "")
        if step_id not in plan.steps:
            fp = fingerprint("shards", plan[f"corpus:{name}"].fingerprint, tok_fp, sft)
            folder = f"{name}-sft" if sft else name
            plan.add(
                Step(
                    id=step_id,
                    kind="shards",
                    fingerprint=fp,
                    output=ws / "shards" / folder / fp,
                    deps=[f"corpus:{name}", "tokenizer"],
                    action=S.shards_action(plan, name, sft),
                )
            )
        return step_id

    def phase(kind: str, arm, fp: str, deps: list[str], action) -> Step:
        # Training phases resume in place from their checkpoints, on GPU nodes when scaled out.
        return plan.add(
            Step(
                id=f"{kind}:{arm.name}",
                kind=kind,
                fingerprint=fp,
                output=ws / "runs" / arm.name / kind / fp,
                deps=deps,
                atomic=False,
                resources="gpu",
                action=action,
            )
        )

    for arm in study.arms:
        pre_shards = sorted({shards(src, False) for stage in arm.pretrain for src in stage.weights})
        pre_fp = fingerprint(
            "pretrain",
            study.model,
            study.pretrain,
            as_dict(arm.pretrain),
            [plan[s].fingerprint for s in pre_shards],
            seed,
        )
        last = phase("pretrain", arm, pre_fp, pre_shards, S.pretrain_action(plan, arm))
        phases = [last]
        if arm.sft is not None:
            sft_shards = sorted({shards(src, True) for src in arm.sft.weights})
            sft_fp = fingerprint(
                "sft", last.fingerprint, study.sft, as_dict(arm.sft), [plan[s].fingerprint for s in sft_shards]
            )
            last = phase("sft", arm, sft_fp, [last.id, *sft_shards], S.sft_action(plan, arm))
            phases.append(last)
        if arm.rl is not None:
            rl_corpus = f"corpus:{arm.rl.problems}"
            rl_fp = fingerprint("rl", last.fingerprint, study.rl, as_dict(arm.rl), plan[rl_corpus].fingerprint, seed)
            last = phase("rl", arm, rl_fp, [last.id, rl_corpus], S.rl_action(plan, arm))
            phases.append(last)
        for phase_step in phases:
            if phase_step.kind not in study.eval.after or not study.eval.tasks:
                continue
            eval_fp = fingerprint("eval", phase_step.fingerprint, as_dict(study.eval), seed)
            plan.add(
                Step(
                    id=f"eval:{arm.name}:{phase_step.kind}",
                    kind="eval",
                    fingerprint=eval_fp,
                    output=ws / "runs" / arm.name / f"eval-{phase_step.kind}" / eval_fp,
                    deps=[phase_step.id, *task_ids],
                    resources="gpu",
                    action=S.eval_action(plan, arm, phase_step),
                )
            )
    return plan


def format_plan(plan: StudyPlan) -> str:
    """One line per step: what would run, resume or be reused, and where its output lives."""
    rows = []
    for i, step in enumerate(plan.ordered(), 1):
        try:
            rel = step.output.relative_to(plan.ws)
        except ValueError:
            rel = step.output
        rows.append(f"[{i:>2}/{len(plan.steps)}] {step.status():<6} {step.id:<32} {rel}")
    return "\n".join(rows)


def run_step(step: Step) -> None:
    """Run one step so that its output ends complete (atomic steps) or resumable (training)."""
    if step.done():
        return
    if step.atomic:
        partial = step.output.with_name(step.output.name + ".partial")
        # A partial folder is the leftover of a killed attempt; its contents are not trusted.
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        step.action(partial)
        partial.rename(step.output)
    else:
        step.output.mkdir(parents=True, exist_ok=True)
        final = step.action(step.output)
        atomic_write(step.output / DONE, f"{final}\n")


def run_study(
    study: Study,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
    report: bool = True,
    data_executor: str = "local",
    verbose: bool = False,
) -> int:
    """Build what is missing, reuse what exists, then ingest into DuckDB and print the tables."""
    if not verbose:
        # datatrove prints a stats block per task to stderr; its stats.json files keep them.
        from loguru import logger

        logger.disable("datatrove")
    plan = build_plan(study, data_executor=data_executor)
    print(f"study {study.study.name}: {len(plan.steps)} steps in {plan.ws}")
    if dry_run:
        print(format_plan(plan))
        return 0
    plan.ws.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        plan.ws / "study.json", {**study.to_dict(), "baseline": study.baseline, "study_file": str(study.path)}
    )
    steps = [plan[s] for s in only] if only else plan.ordered()
    started = time.time()
    for i, step in enumerate(steps, 1):
        status = step.status()
        print(f"[{i:>2}/{len(steps)}] {step.id:<32} {status}", flush=True)
        if status == "reuse":
            continue
        t0 = time.time()
        run_step(step)
        print(f"        {step.id} done in {time.time() - t0:.1f}s -> {step.output}", flush=True)
    print(f"all steps complete in {time.time() - started:.1f}s")
    if report and not only:
        from frontload.steps import finish_study

        finish_study(plan)
    return 0
