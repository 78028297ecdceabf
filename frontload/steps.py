"""What each step of a study does: thin adapters from the study's tables to the stages' functions.

Each ``*_action`` returns a function ``action(out_dir) -> result`` that the runner calls with the
step's output folder (a ``.partial`` folder for data steps). Stage modules are imported inside the
actions so that planning a study (``--dry-run``) imports no torch, vLLM or Megatron.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontload.core.config import ConfigError, as_dict, from_mapping
from frontload.core.fingerprint import atomic_write_json

if TYPE_CHECKING:
    from frontload.runner import Step, StudyPlan
    from frontload.study_file import ArmSection, CorpusSection, EvalTaskSection, Study


def corpus_files(folder: Path) -> list[Path]:
    """The document files of a corpus folder."""
    files = sorted((folder / "data").glob("*.jsonl*")) + sorted((folder / "data").glob("*.parquet"))
    return files or [folder]


# -- data steps ---------------------------------------------------------------------------------
def task_action(study: Study, task: EvalTaskSection):
    def action(out: Path) -> None:
        if task.path is not None:
            import shutil

            src = Path(task.path)
            if not src.is_absolute() and study.path is not None:
                src = study.path.parent / src
            shutil.copyfile(src, out / f"task{''.join(src.suffixes)}")
        else:
            from frontload.synth.sources import write_eval_tasks

            write_eval_tasks(
                out / "task.jsonl",
                families=task.families,
                n=task.n,
                seed=task.seed,
                difficulty=tuple(task.difficulty),
                templates=task.templates,
            )
        atomic_write_json(out / "task.json", {"name": task.name, "config": as_dict(task)})

    return action


def task_spec(plan: StudyPlan, task: EvalTaskSection) -> Any:
    """The evaluator's TaskSpec of a study task (its file inside the task step's folder)."""
    from frontload.train.evaluate import TaskSpec

    folder = plan[f"task:{task.name}"].output
    path = next(p for p in sorted(folder.iterdir()) if p.name.startswith("task.") and p.name != "task.json")
    return TaskSpec(path=str(path), name=task.name, question_field=task.question_field, answer_field=task.answer_field)


def corpus_action(plan: StudyPlan, name: str, corpus: CorpusSection):
    study = plan.study

    def action(out: Path) -> None:
        src = corpus.source
        post = bool(corpus.generate or corpus.filters)
        first = out / "_raw" if post else out
        if src.kind == "packaged_text":
            from frontload.corpus.packaged_text import write_packaged_text

            write_packaged_text(first)
        elif src.kind == "generators":
            from frontload.synth.sources import write_problems

            write_problems(
                first,
                families=src.families,
                n=src.n,
                seed=src.seed if src.seed is not None else study.study.seed,
                difficulty=tuple(src.difficulty),
                style=src.style,
                templates=src.templates,
            )
        elif src.question_field is not None:
            from frontload.synth.sources import FileSource, write_source

            if len(src.paths) != 1:
                raise ConfigError(f"[corpora.{name}].source.paths", "a problems source reads one file or folder")
            write_source(
                first,
                FileSource(
                    path=src.paths[0],
                    format="hf" if src.kind == "hf_dataset" else "auto",
                    question_field=src.question_field,
                    answer_field=src.answer_field,
                    solution_field=src.solution_field,
                ),
            )
        else:
            from frontload.corpus.text_corpus import write_text_corpus

            write_text_corpus(first, src.paths, text_field=src.text_field)
        current = first
        if corpus.generate:
            from frontload.synth.generate import GenerateConfig, generate_traces

            cfg = from_mapping(GenerateConfig, corpus.generate, f"[corpora.{name}].generate")
            nxt = out / "_traces" if corpus.filters else out
            generate_traces(current, nxt, cfg)
            current = nxt
        if corpus.filters:
            from frontload.filters.pipeline import FilterConfig, run_filters

            table = dict(corpus.filters)
            if table.get("decontaminate") is True:  # against every evaluation task of the study
                table["decontaminate"] = [f"{t.name}={task_spec(plan, t).path}" for t in study.eval.tasks]
            elif table.get("decontaminate") is False:
                table.pop("decontaminate")
            cfg = from_mapping(FilterConfig, table, f"[corpora.{name}].filters")
            run_filters(current, out, cfg)

    return action


def tokenizer_action(plan: StudyPlan):
    study = plan.study

    def action(out: Path) -> None:
        from frontload.corpus.tokenizer import train_tokenizer

        inputs = [f for c in study.tokenizer.train_on for f in corpus_files(plan[f"corpus:{c}"].output)]
        train_tokenizer(inputs, out, study.tokenizer.vocab_size)

    return action


def shards_action(plan: StudyPlan, name: str, sft: bool):
    def action(out: Path) -> None:
        from frontload.corpus.shards import build_shards
        from frontload.corpus.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(plan["tokenizer"].output)
        build_shards(corpus_files(plan[f"corpus:{name}"].output), out, tokenizer, sft=sft, executor=plan.data_executor)

    return action


# -- training and evaluation steps ---------------------------------------------------------------
def final_checkpoint(step: Step) -> Path:
    """The final checkpoint a finished training step recorded in its DONE file."""
    return Path((step.output / "DONE").read_text().strip())


def shard_dirs(plan: StudyPlan, names, sft: bool = False) -> dict[str, str]:
    suffix = ":sft" if sft else ""
    return {n: str(plan[f"shards:{n}{suffix}"].output) for n in names}


def _repeat_caps(study: Study) -> dict[str, float]:
    return {name: c.max_epochs for name, c in study.corpora.items() if c.max_epochs is not None}


def _mix(study: Study, phase: str, stages) -> Any:
    from frontload.corpus.mix import MixSchedule

    return MixSchedule(**{phase: list(stages)}, repeat_caps=_repeat_caps(study))


def pretrain_action(plan: StudyPlan, arm: ArmSection):
    study = plan.study

    def action(out: Path) -> Path:
        from frontload.corpus.tokenizer import load_tokenizer
        from frontload.study_file import model_config, phase_config
        from frontload.train.pretrain import pretrain

        tok_dir = plan["tokenizer"].output
        sources = sorted({s for st in arm.pretrain for s in st.weights})
        cfg = phase_config(
            study,
            "pretrain",
            run_dir=str(out),
            shards=shard_dirs(plan, sources),
            mix=_mix(study, "pretrain", arm.pretrain),
            tokenizer=str(tok_dir),
            arm=arm.name,
            seed=study.study.seed,
            model=model_config(study, load_tokenizer(tok_dir).vocab_size),
        )
        return pretrain(cfg)

    return action


def sft_action(plan: StudyPlan, arm: ArmSection):
    study = plan.study

    def action(out: Path) -> Path:
        from frontload.study_file import phase_config
        from frontload.train.sft import sft

        cfg = phase_config(
            study,
            "sft",
            run_dir=str(out),
            shards=shard_dirs(plan, arm.sft.weights, sft=True),
            mix=_mix(study, "sft", [arm.sft]),
            arm=arm.name,
            seed=study.study.seed,
            init_from=str(final_checkpoint(plan[f"pretrain:{arm.name}"])),
        )
        return sft(cfg)

    return action


def rl_action(plan: StudyPlan, arm: ArmSection):
    study = plan.study

    def action(out: Path) -> Path:
        from frontload.study_file import phase_config
        from frontload.train.rl import rl

        overrides = {"steps": arm.rl.steps} if arm.rl.steps is not None else {}
        cfg = phase_config(
            study,
            "rl",
            run_dir=str(out),
            arm=arm.name,
            seed=study.study.seed,
            init_from=str(final_checkpoint(plan[f"sft:{arm.name}"])),
            prompts=str(plan[f"corpus:{arm.rl.problems}"].output),
            **overrides,
        )
        return rl(cfg)

    return action


def eval_action(plan: StudyPlan, arm: ArmSection, phase_step: Step):
    study = plan.study

    def action(out: Path) -> None:
        from frontload.core.events import RunFolder
        from frontload.train.evaluate import EvalConfig, evaluate

        ckpt = final_checkpoint(phase_step)
        tasks = [task_spec(plan, t) for t in study.eval.tasks]
        perplexity = [str(plan[f"shards:{c}"].output) for c in study.eval.perplexity_on if f"shards:{c}" in plan.steps]
        config = from_mapping(
            EvalConfig,
            {**study.eval.decoding(), "seed": study.study.seed, "perplexity": perplexity},
            f"{study.path}: [eval]",
        )
        with RunFolder(
            out,
            stage="eval",
            arm=arm.name,
            phase=phase_step.kind,
            parent=str(ckpt),
            config={"checkpoint": str(ckpt), "tasks": [as_dict(t) for t in tasks], **as_dict(config)},
        ) as run:
            results = evaluate(ckpt, tasks, config, run)
        from frontload.train.evaluate import format_table

        print(format_table(results))

    return action


def finish_study(plan: StudyPlan) -> Any:
    """Ingest every run folder into DuckDB, print the ablation and persistence tables and the plots."""
    from frontload.analysis import report

    paths = report(plan.ws, html=True)
    print(f"\nworkspace: {plan.ws}")
    print(
        f'DuckDB:    {plan.ws / "frontload.duckdb"}  (try: frontload sql --workspace {plan.ws} "SELECT * FROM persistence")'
    )
    return paths


def print_mix_plans(study: Study, arms: list[str] | None = None, out: Path | None = None) -> int:
    """Build the shard sets the arms need (reusing what exists), then print and write each arm's mix plan."""
    from frontload.corpus.mix import plan_mix
    from frontload.runner import build_plan, run_step

    plan = build_plan(study)
    chosen = [a for a in study.arms if not arms or a.name in arms]
    if arms and len(chosen) != len(arms):
        from frontload.core.errors import FrontloadError

        raise FrontloadError(f"unknown arm in {arms} (arms: {[a.name for a in study.arms]})")
    for step in plan.ordered():
        if step.kind in ("task", "corpus", "tokenizer", "shards") and not step.done():
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
                _mix(study, phase, stages),
                shard_dirs(plan, names, sft=sft),
                seq_len=seq_len,
                seed=study.study.seed,
                phase=phase,
            )
            mix.write(plan.ws / "mix" / arm.name / phase / "plan.json")
            plans[f"{arm.name}/{phase}"] = mix.to_dict()
            print(f"\n== {arm.name} / {phase} ==")
            print(mix.format_table())
    if out is not None:
        atomic_write_json(out, plans)
    return 0
