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
import sys
import time
from pathlib import Path
from typing import Any

from frontload import steps as S
from frontload.core.atomic import atomic_folder
from frontload.core.config import as_dict
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write, atomic_write_json, fingerprint
from frontload.steps import DONE, Step, StudyPlan
from frontload.study_file import ArmSection, Study, teacher_of

__all__ = ["DONE", "Step", "StudyPlan", "build_plan", "format_plan", "print_mix_plans", "run_step", "run_study"]

DATA_KINDS = ("task", "corpus", "tokenizer", "shards")


@functools.cache
def _environment_fingerprint() -> str:
    # Packaged text depends on what is installed; this keeps the web corpus keyed by it cheaply.
    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    return fingerprint(sys.version_info[:2], names)


def build_plan(study: Study, data_executor: str = "local") -> StudyPlan:
    """Turn a study into its steps, fingerprints and output folders (nothing runs)."""
    plan = StudyPlan(study, data_executor=data_executor)
    # Evaluation tasks come first: decontamination of every training corpus checks against them.
    task_ids = _add_tasks(plan)
    _add_corpora(plan, task_ids)
    _add_tokenizer(plan)
    _add_teachers(plan, task_ids)  # after the tokenizer they train with; adds the corpora they generate
    for arm in study.arms:
        for phase_step in _add_phases(plan, arm):
            _add_eval(plan, arm, phase_step, task_ids)
    return plan


def _add_tasks(plan: StudyPlan) -> list[str]:
    for task in plan.study.eval.tasks:
        fp = fingerprint("task", as_dict(task))
        plan.add(
            Step(
                id=f"task:{task.name}",
                kind="task",
                fingerprint=fp,
                output=plan.layout.task(task.name, fp),
                action=S.task_action(plan.study, task),
            )
        )
    return [f"task:{t.name}" for t in plan.study.eval.tasks]


def _add_corpora(plan: StudyPlan, task_ids: list[str]) -> None:
    for name, corpus in plan.study.corpora.items():
        if teacher_of(corpus) is None:  # a teacher's corpora follow the teacher (_add_teachers)
            _add_corpus(plan, name, task_ids)


def _add_corpus(plan: StudyPlan, name: str, task_ids: list[str]) -> None:
    study = plan.study
    corpus = study.corpora[name]
    env = _environment_fingerprint() if corpus.source.kind == "packaged_text" else None
    decontam = bool(corpus.filters and corpus.filters.get("decontaminate"))
    task_fps = [plan[t].fingerprint for t in task_ids] if decontam else []
    teacher = teacher_of(corpus)
    # A corpus sampled from a study teacher is keyed by what the teacher is, not where its export lies.
    teacher_fp = [plan[f"teacher:{teacher}"].fingerprint] if teacher else []
    fp = fingerprint("corpus", as_dict(corpus), study.study.seed, env, task_fps, *teacher_fp)
    plan.add(
        Step(
            id=f"corpus:{name}",
            kind="corpus",
            fingerprint=fp,
            output=plan.layout.corpus(name, fp),
            deps=[*(task_ids if decontam else []), *([f"teacher:{teacher}"] if teacher else [])],
            action=S.corpus_action(plan, name, corpus),
        )
    )


def _add_teachers(plan: StudyPlan, task_ids: list[str]) -> None:
    """Each teacher once its training corpora exist, then the corpora it generates, in dependency order.

    A teacher may train on another teacher's corpus; the study loader refused cycles, so every round
    adds at least one teacher until all are planned.
    """
    study = plan.study
    waiting = dict(study.teachers)
    while waiting:
        ready = [n for n, t in waiting.items() if all(f"corpus:{c}" in plan.steps for c in t.corpora)]
        for name in ready:
            _add_teacher(plan, name)
            del waiting[name]
            for cname, corpus in study.corpora.items():
                if teacher_of(corpus) == name:
                    _add_corpus(plan, cname, task_ids)
        if not ready:
            raise FrontloadError(f"teachers {sorted(waiting)} depend on each other's corpora (a cycle)")


def _add_teacher(plan: StudyPlan, name: str) -> Step:
    study, teacher = plan.study, plan.study.teachers[name]
    pre = sorted({_add_shards(plan, src, False) for st in teacher.pretrain for src in st.weights})
    sft = sorted({_add_shards(plan, src, True) for src in teacher.sft.weights}) if teacher.sft else []
    seed = teacher.seed if teacher.seed is not None else study.study.seed
    fp = fingerprint(
        "teacher",
        as_dict(teacher),
        study.model,
        study.pretrain,
        study.sft,
        [plan[s].fingerprint for s in [*pre, *sft]],
        seed,
    )
    return plan.add(
        Step(
            id=f"teacher:{name}",
            kind="teacher",
            fingerprint=fp,
            output=plan.layout.teacher(name, fp),
            deps=[*pre, *sft],
            atomic=False,  # trains in place and resumes from its checkpoints, like an arm's phases
            resources="gpu",
            action=S.teacher_action(plan, name),
        )
    )


def _add_tokenizer(plan: StudyPlan) -> None:
    tok = plan.study.tokenizer
    fp = fingerprint("tokenizer", as_dict(tok), [plan[f"corpus:{c}"].fingerprint for c in tok.train_on])
    plan.add(
        Step(
            id="tokenizer",
            kind="tokenizer",
            fingerprint=fp,
            output=plan.layout.tokenizer(fp),
            deps=[f"corpus:{c}" for c in tok.train_on],
            action=S.tokenizer_action(plan),
        )
    )


def _add_shards(plan: StudyPlan, name: str, sft: bool) -> str:
    """The shard set of a corpus (pretraining or SFT), added once however many arms read it."""
    step_id = f"shards:{name}" + (":sft" if sft else "")
    if step_id not in plan.steps:
        fp = fingerprint("shards", plan[f"corpus:{name}"].fingerprint, plan["tokenizer"].fingerprint, sft)
        plan.add(
            Step(
                id=step_id,
                kind="shards",
                fingerprint=fp,
                output=plan.layout.shards(name, fp, sft=sft),
                deps=[f"corpus:{name}", "tokenizer"],
                action=S.shards_action(plan, name, sft),
            )
        )
    return step_id


def _add_phases(plan: StudyPlan, arm: ArmSection) -> list[Step]:
    """An arm's training phases along its checkpoint chain, each keyed by the one before."""
    study, seed = plan.study, plan.study.study.seed

    def phase(kind: str, fp: str, deps: list[str], action) -> Step:
        # Training phases resume in place from their checkpoints, on GPU nodes when scaled out.
        return plan.add(
            Step(
                id=f"{kind}:{arm.name}",
                kind=kind,
                fingerprint=fp,
                output=plan.layout.run(arm.name, kind, fp),
                deps=deps,
                atomic=False,
                resources="gpu",
                action=action,
            )
        )

    pre_shards = sorted({_add_shards(plan, src, False) for stage in arm.pretrain for src in stage.weights})
    pre_fp = fingerprint(
        "pretrain",
        study.model,
        study.pretrain,
        as_dict(arm.pretrain),
        [plan[s].fingerprint for s in pre_shards],
        seed,
    )
    last = phase("pretrain", pre_fp, pre_shards, S.pretrain_action(plan, arm))
    phases = [last]
    if arm.sft is not None:
        sft_shards = sorted({_add_shards(plan, src, True) for src in arm.sft.weights})
        sft_fp = fingerprint(
            "sft", last.fingerprint, study.sft, as_dict(arm.sft), [plan[s].fingerprint for s in sft_shards]
        )
        last = phase("sft", sft_fp, [last.id, *sft_shards], S.sft_action(plan, arm))
        phases.append(last)
    if arm.rl is not None:
        rl_corpus = f"corpus:{arm.rl.problems}"
        rl_fp = fingerprint("rl", last.fingerprint, study.rl, as_dict(arm.rl), plan[rl_corpus].fingerprint, seed)
        last = phase("rl", rl_fp, [last.id, rl_corpus], S.rl_action(plan, arm))
        phases.append(last)
    return phases


def _add_eval(plan: StudyPlan, arm: ArmSection, phase_step: Step, task_ids: list[str]) -> None:
    study = plan.study
    if phase_step.kind not in study.eval.after or not study.eval.tasks:
        return
    fp = fingerprint("eval", phase_step.fingerprint, as_dict(study.eval), study.study.seed)
    plan.add(
        Step(
            id=f"eval:{arm.name}:{phase_step.kind}",
            kind="eval",
            fingerprint=fp,
            output=plan.layout.eval_run(arm.name, phase_step.kind, fp),
            deps=[phase_step.id, *task_ids],
            resources="gpu",
            action=S.eval_action(plan, arm, phase_step),
        )
    )


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
        # Built under a known name, so that `status` can tell an interrupted attempt (and it is rebuilt).
        with atomic_folder(step.output, staging=step.partial, what=f"{step.kind} output") as partial:
            step.action(partial)
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
    unknown = [s for s in only or [] if s not in plan.steps]
    if unknown:
        from frontload.core.errors import FrontloadError

        raise FrontloadError(f"--only {unknown[0]!r}: no such step (steps: {', '.join(plan.steps)})")
    print(f"study {study.study.name}: {len(plan.steps)} steps in {plan.ws}")
    if dry_run:
        print(format_plan(plan))
        return 0
    plan.ws.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        plan.layout.study_file, {**study.to_dict(), "baseline": study.baseline, "study_file": str(study.path)}
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
        finish_study(plan)
    return 0


def finish_study(plan: StudyPlan) -> Any:
    """Ingest every run folder into DuckDB, print the ablation and persistence tables and the plots."""
    from frontload.analysis import report

    paths = report(plan.ws, html=True)
    print(f"\nworkspace: {plan.ws}")
    print(f'DuckDB:    {plan.layout.db}  (try: frontload sql --workspace {plan.ws} "SELECT * FROM persistence")')
    return paths


def print_mix_plans(study: Study, arms: list[str] | None = None, out: Path | None = None) -> int:
    """Build the shard sets the arms need (reusing what exists), then print and write each arm's mix plan."""
    from frontload.corpus.mix_plan import plan_mix

    plan = build_plan(study)
    chosen = [a for a in study.arms if not arms or a.name in arms]
    if arms and len(chosen) != len(arms):
        raise FrontloadError(f"unknown arm in {arms} (arms: {[a.name for a in study.arms]})")
    for step in plan.ordered():
        # A corpus generated by a study teacher needs the teacher trained and exported first.
        if (step.kind in DATA_KINDS or step.kind == "teacher") and not step.done():
            print(f"building {step.id} ...", flush=True)
            run_step(step)
    seq_len = int(study.model.get("seq_len", 64))
    plans = {}
    for arm in chosen:
        phases = {"pretrain": (arm.pretrain, False)}
        if arm.sft is not None:
            phases["sft"] = ([arm.sft], True)
        for phase, (stages, sft) in phases.items():
            names = sorted({s for st in stages for s in st.weights})
            mix = plan_mix(
                S.mix_schedule(study, phase, stages),
                S.shard_dirs(plan, names, sft=sft),
                seq_len=seq_len,
                seed=study.study.seed,
                phase=phase,
            )
            mix.write(plan.layout.mix_plan(arm.name, phase))
            plans[f"{arm.name}/{phase}"] = mix.to_dict()
            print(f"\n== {arm.name} / {phase} ==")
            print(mix.format_table())
    if out is not None:
        atomic_write_json(out, plans)
    return 0
