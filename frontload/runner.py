"""The study runner: ``frontload run study.toml`` builds what is missing and reuses what exists.

A study becomes a list of steps in dependency order (corpora, tokenizer, shard sets, evaluation
tasks, and per training seed and arm: pretraining, SFT, RL and an evaluation after each phase).
Every step has a fingerprint of its inputs and config, and its output lives in a folder named by
that fingerprint, so a changed setting re-runs exactly the steps downstream of it and nothing else.
Arms that agree on their first pretraining stages train them once, in shared prefix steps that
form a tree, and branch (:func:`frontload.prefixes.plan_prefixes`).

Invariants:
- A data or evaluation step writes into ``<out>.partial`` and renames it into place when complete,
  so an output folder is complete or absent.
- A training step works in its run folder and resumes from its last checkpoint; it is complete
  when ``DONE`` names its final checkpoint.
- A rerun after a kill continues from the last completed step or checkpoint and ends with the same
  results as an uninterrupted run.
- An arm that branches from a shared prefix ends bitwise where training it alone would, so its
  pretraining step has the same fingerprint either way.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from frontload import steps as S
from frontload.core.atomic import atomic_folder
from frontload.core.config import as_dict
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_write, atomic_write_json, fingerprint
from frontload.prefixes import PrefixGroup, plan_prefixes
from frontload.steps import DONE, Step, StudyPlan
from frontload.study_file import ArmSection, Study, teacher_of
from frontload.synth.families import VERSION as GENERATORS_VERSION

__all__ = ["DONE", "Step", "StudyPlan", "build_plan", "format_plan", "print_mix_plans", "run_step", "run_study"]

DATA_KINDS = ("task", "corpus", "tokenizer", "shards")


@functools.cache
def _environment_fingerprint() -> str:
    # Packaged text depends on what is installed and on how it is picked; this keeps the web corpus
    # keyed by both cheaply.
    from frontload.corpus.packaged_text import CONTENT_VERSION

    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    return fingerprint(sys.version_info[:2], names, CONTENT_VERSION)


def build_plan(study: Study, data_executor: str = "local") -> StudyPlan:
    """Turn a study into its steps, fingerprints and output folders (nothing runs)."""
    plan = StudyPlan(study, data_executor=data_executor)
    # Evaluation tasks come first: decontamination of every training corpus checks against them.
    task_ids = _add_tasks(plan)
    _add_corpora(plan, task_ids)
    _add_tokenizer(plan)
    _add_teachers(plan, task_ids)  # after the tokenizer they train with; adds the corpora they generate
    plan.prefixes, plan.notes = plan_prefixes(study)
    # Groups are listed outer before inner, so an arm ends up with its innermost group.
    branch_of = {arm: group for group in plan.prefixes for arm in group.arms}
    # Evaluations read the perplexity corpora's shard sets: added before any arm, so that every
    # evaluation waits for them (side by side on a cluster), whichever arm reads them first.
    pretrained = {src for arm in study.arms for st in arm.pretrain for src in st.weights}
    plan.perplexity = [
        _add_shards(plan, c, False) for c in study.eval.perplexity_on if c in pretrained or f"shards:{c}" in plan.steps
    ]
    # Seed by seed, so that a first seed of every arm is complete before the next one starts.
    for seed in study.seeds:
        for group in plan.prefixes:
            _add_prefix(plan, group, seed)
        for arm in study.arms:
            for phase_step in _add_phases(plan, arm, seed, branch_of.get(arm.name)):
                _add_eval(plan, arm, seed, phase_step, task_ids)
    return plan


def _add_tasks(plan: StudyPlan) -> list[str]:
    for task in plan.study.eval.tasks:
        generated = [GENERATORS_VERSION] if task.path is None else []
        fp = fingerprint("task", as_dict(task), *generated)
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
    generated = [GENERATORS_VERSION] if corpus.source.kind == "generators" else []
    decontam = bool(corpus.filters and corpus.filters.get("decontaminate"))
    task_fps = [plan[t].fingerprint for t in task_ids] if decontam else []
    teacher = teacher_of(corpus)
    # A corpus sampled from a study teacher is keyed by what the teacher is, not where its export lies.
    teacher_fp = [plan[f"teacher:{teacher}"].fingerprint] if teacher else []
    fp = fingerprint("corpus", as_dict(corpus), study.study.seed, env, task_fps, *teacher_fp, *generated)
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


def _add_prefix(plan: StudyPlan, group: PrefixGroup, seed: int) -> Step:
    """The step that trains a shared prefix once for one seed; its arms' pretraining continues from it."""
    study = plan.study
    shards = sorted({_add_shards(plan, src, False) for stage in group.stages for src in stage.weights})
    # Exactly what determines the state at the branch point: not the arms, not their later stages,
    # and not whether an outer prefix trained its first steps (the state is bitwise the same).
    fp = fingerprint(
        "pretrain-prefix",
        study.model,
        study.pretrain,
        as_dict(group.stages),
        [plan[s].fingerprint for s in shards],
        plan["tokenizer"].fingerprint,
        seed,
        group.total_steps,
        group.shared_steps,
    )
    outer = plan[plan.prefixes[group.parent - 1].step_id(seed)] if group.parent else None
    return plan.add(
        Step(
            id=group.step_id(seed),
            kind="pretrain-prefix",
            fingerprint=fp,
            output=plan.layout.shared_run("pretrain", fp, seed=seed),
            deps=[outer.id, *shards] if outer else shards,
            atomic=False,
            resources="gpu",
            action=S.prefix_action(
                plan, group.stages, seed, total_steps=group.total_steps, stop_at=group.shared_steps, outer=outer
            ),
            seed=seed,
        )
    )


def _add_phases(plan: StudyPlan, arm: ArmSection, seed: int, prefix: PrefixGroup | None = None) -> list[Step]:
    """An arm's training phases for one seed along its checkpoint chain, each keyed by the one before."""
    study = plan.study

    def phase(kind: str, fp: str, deps: list[str], action) -> Step:
        # Training phases resume in place from their checkpoints, on GPU nodes when scaled out.
        return plan.add(
            Step(
                id=S.run_id(kind, arm.name, seed),
                kind=kind,
                fingerprint=fp,
                output=plan.layout.run(arm.name, kind, fp, seed=seed),
                deps=deps,
                atomic=False,
                resources="gpu",
                action=action,
                seed=seed,
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
    # A branch ends in the same state as a run from scratch (tested bitwise), so its fingerprint is
    # the same either way and a workspace trained without sharing is reused with it, and back.
    branch = plan[prefix.step_id(seed)] if prefix is not None else None
    deps = [branch.id, *pre_shards] if branch is not None else pre_shards
    last = phase("pretrain", pre_fp, deps, S.pretrain_action(plan, arm, seed, branch))
    phases = [last]
    if arm.sft is not None:
        sft_shards = sorted({_add_shards(plan, src, True) for src in arm.sft.weights})
        sft_fp = fingerprint(
            "sft", last.fingerprint, study.sft, as_dict(arm.sft), [plan[s].fingerprint for s in sft_shards]
        )
        last = phase("sft", sft_fp, [last.id, *sft_shards], S.sft_action(plan, arm, seed, last))
        phases.append(last)
    if arm.rl is not None:
        rl_corpus = f"corpus:{arm.rl.problems}"
        rl_fp = fingerprint("rl", last.fingerprint, study.rl, as_dict(arm.rl), plan[rl_corpus].fingerprint, seed)
        last = phase("rl", rl_fp, [last.id, rl_corpus], S.rl_action(plan, arm, seed, last))
        phases.append(last)
    return phases


def _add_eval(plan: StudyPlan, arm: ArmSection, seed: int, phase_step: Step, task_ids: list[str]) -> None:
    study = plan.study
    if phase_step.kind not in study.eval.after or not study.eval.tasks:
        return
    fp = fingerprint("eval", phase_step.fingerprint, as_dict(study.eval), seed)
    plan.add(
        Step(
            id=S.run_id("eval", arm.name, seed, phase_step.kind),
            kind="eval",
            fingerprint=fp,
            output=plan.layout.eval_run(arm.name, phase_step.kind, fp, seed=seed),
            deps=[phase_step.id, *task_ids, *plan.perplexity],
            resources="gpu",
            action=S.eval_action(plan, arm, seed, phase_step),
            seed=seed,
        )
    )


def format_plan(plan: StudyPlan) -> str:
    """One line per step: what would run, resume or be reused, and where its output lives."""
    rows = []
    width = max([32, *(len(s.id) for s in plan.steps.values())])
    for i, step in enumerate(plan.ordered(), 1):
        try:
            rel = step.output.relative_to(plan.ws)
        except ValueError:
            rel = step.output
        rows.append(f"[{i:>2}/{len(plan.steps)}] {step.status():<6} {step.id:<{width}} {rel}")
    return "\n".join(rows)


def format_sweeps(study: Study) -> str:
    """One block per sweep: its axes, keys and values, and the arms it made."""
    lines = []
    for sweep in study.sweeps:
        axes = "; ".join(
            f"{name} ({axis.key}) = {', '.join(str(v) for v in axis.values)}" for name, axis in sweep.axes.items()
        )
        made = [a.name for a in study.arms if a.sweep is not None and a.sweep["template"] == sweep.arm]
        how = ("zipped" if sweep.zip else "grid") if len(sweep.axes) > 1 else ""
        kept = "template kept" if sweep.keep_template else "template dropped"
        lines.append(f"sweep {sweep.arm}: {axes} -> {len(sweep.points())} arms{f' ({how})' if how else ''}, {kept}")
        lines.append(f"  {', '.join(n for n in made if n.startswith(sweep.arm + '@'))}")
    return "\n".join(lines)


def format_prefixes(plan: StudyPlan) -> str:
    """The branching tree: which arms (and inner prefixes) continue from which prefix, at which step; and why not."""
    branch_of = {arm: group.index for group in plan.prefixes for arm in group.arms}
    lines = []

    def draw(group: PrefixGroup, seed: int, lead: str, indent: str) -> None:
        k = len(group.stages)
        stages = f"stages 0-{k - 1}" if k > 1 else "stage 0"
        start = plan.prefixes[group.parent - 1].shared_steps + 1 if group.parent else 1
        lines.append(
            f"{lead}{group.step_id(seed)}  {stages} ({group.samples} samples): steps {start}-{group.shared_steps} "
            f"of the phase's {group.total_steps}, trained once"
        )
        children: list[PrefixGroup | str] = [g for g in plan.prefixes if g.parent == group.index]
        children += [a for a in group.arms if branch_of[a] == group.index]
        for i, child in enumerate(children):
            last = i == len(children) - 1
            branch = f"{indent}  {'└─' if last else '├─'} "
            if isinstance(child, PrefixGroup):
                draw(child, seed, branch, indent + ("     " if last else "  │  "))
            else:
                lines.append(
                    f"{branch}{S.run_id('pretrain', child, seed)}  continues at step {group.shared_steps + 1}"
                )

    for seed in plan.study.seeds:
        for group in plan.prefixes:
            if group.parent is None:
                draw(group, seed, "", "")
    lines.extend(plan.notes)
    return "\n".join(lines)


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


def portable_error(e: BaseException) -> FrontloadError:
    """``e`` as an error that survives the way back from a worker process.

    An exception whose constructor takes other arguments than its message (``ConfigError(key,
    message)``) cannot be rebuilt in the parent, and ``ProcessPoolExecutor`` then declares the whole
    pool broken, killing the other steps that were running.
    """
    text = str(e) if isinstance(e, FrontloadError) else f"{type(e).__name__}: {e}"
    return FrontloadError(text)


def run_step_logged(study: Study, step_id: str, log: str, threads: int | None, data_executor: str) -> float:
    """One step in a worker process, its output written to ``log``; returns its seconds."""
    from loguru import logger

    logger.disable("datatrove")
    if threads is not None:
        _pin_threads(threads)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # At the descriptor level, so that subprocesses (datatrove workers, a vLLM server) write there too.
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    started = time.time()
    try:
        # Planned afresh in the worker: a plan holds closures, which do not travel between processes.
        run_step(build_plan(study, data_executor=data_executor)[step_id])
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        traceback.print_exc()  # into the step's log, whose tail the console shows
        raise portable_error(e) from None
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return time.time() - started


def _pin_threads(n: int) -> None:
    # Float sums depend on how many threads split them: a fixed count makes CPU results bitwise the same
    # on machines with other core counts. Subprocesses (datatrove workers, the vLLM server) inherit it.
    import os

    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)


def run_study(
    study: Study,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
    report: bool = True,
    data_executor: str = "local",
    verbose: bool = False,
    jobs: int | None = None,
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
    seeds = ", ".join(str(s) for s in study.seeds)
    print(f"study {study.study.name}: {len(plan.steps)} steps in {plan.ws} (training seeds: {seeds})")
    if study.sweeps:
        print(format_sweeps(study))
    if plan.prefixes or plan.notes:
        print(format_prefixes(plan))
    if dry_run:
        print(format_plan(plan))
        return 0
    if study.study.threads is not None:
        _pin_threads(study.study.threads)
    plan.ws.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        plan.layout.study_file, {**study.to_dict(), "baseline": study.baseline, "study_file": str(study.path)}
    )
    steps = [plan[s] for s in only] if only else plan.ordered()
    started = time.time()
    jobs = jobs or study.study.jobs
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        jobs = 1  # one step's ranks under torchrun: a pool in every rank would run the step N times over
    if jobs > 1:
        from frontload.parallel import run_parallel

        print(f"running up to {jobs} steps at once; each step's output goes to {plan.ws / 'logs'}", flush=True)
        run_parallel(plan, steps, jobs, run_step_logged, data_executor=data_executor)
        steps = []
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
