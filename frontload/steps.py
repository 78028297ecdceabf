"""The steps of a study and what each does: thin adapters from the study's tables to the stages' functions.

A :class:`Step` is one unit of work, complete or absent; a :class:`StudyPlan` holds a study's steps.
Each ``*_action`` returns a function ``action(out_dir) -> result`` that the runner calls with the
step's output folder (a ``.partial`` folder for data steps). Stage modules are imported inside the
actions so that planning a study (``--dry-run``) imports no torch, vLLM or Megatron.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontload.core.config import ConfigError, as_dict, from_mapping
from frontload.core.fingerprint import atomic_write_json
from frontload.core.workspace import Workspace

if TYPE_CHECKING:
    from frontload.study_file import ArmSection, CorpusSection, EvalTaskSection, Study

DONE = "DONE"  # a training step's completion file: names its final checkpoint
PARTIAL = ".partial"  # a data step builds into <output>.partial, renamed into place when complete
TEACHER_EXPORT = "export"  # a teacher step's Hugging Face folder, inside its output folder


@dataclass(kw_only=True)
class Step:
    """One unit of work of a study, complete or absent."""

    id: str  # e.g. "shards:web", "teacher:tutor", "pretrain:baseline:s1", "eval:front_loaded:sft:s1"
    kind: str  # corpus, tokenizer, shards, task, teacher, pretrain, sft, rl, eval
    fingerprint: str
    output: Path
    deps: list[str] = field(default_factory=list)
    action: Callable[[Path], Any] | None = None  # builds the output into the given folder
    atomic: bool = True  # build in <output>.partial then rename; else resume in place
    resources: str = "cpu"  # "cpu" data step or "gpu" training step (for scale-out job scripts)
    seed: int | None = None  # the training seed of a training or evaluation step (data steps: None)

    @property
    def partial(self) -> Path:
        """Where an atomic step builds its output (a leftover means an interrupted attempt)."""
        return self.output.with_name(self.output.name + PARTIAL)

    def done(self) -> bool:
        if self.atomic:
            return self.output.exists()
        return (self.output / DONE).exists()

    def status(self) -> str:
        if self.done():
            return "reuse"
        return "resume" if (self.partial if self.atomic else self.output).exists() else "run"


class StudyPlan:
    """The steps of a study, with the paths later steps read from earlier ones."""

    def __init__(self, study: Study, data_executor: str = "local") -> None:
        self.study = study
        self.data_executor = data_executor  # datatrove executor for data steps: local, slurm or ray
        self.ws = study.workspace
        self.layout = Workspace(self.ws)
        self.steps: dict[str, Step] = {}
        self.prefixes: list[Any] = []  # runner.PrefixGroup: arms that train their first stages once
        self.notes: list[str] = []  # why arms that could have shared a prefix do not
        self.perplexity: list[str] = []  # shard steps every evaluation reads for its perplexity

    def add(self, step: Step) -> Step:
        self.steps[step.id] = step
        return step

    def __getitem__(self, step_id: str) -> Step:
        return self.steps[step_id]

    def ordered(self) -> list[Step]:
        return list(self.steps.values())


def run_id(kind: str, arm: str, seed: int, phase: str | None = None) -> str:
    """The id of a training or evaluation step: ``pretrain:baseline:s1``, ``eval:baseline:sft:s1``."""
    return ":".join([kind, arm, *([phase] if phase else []), f"s{seed}"])


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
        from frontload.study_file import filter_config, generate_config

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
        where = f"{study.path}: [corpora.{name}]"
        if corpus.generate:
            from frontload.study_file import model_config, teacher_of
            from frontload.synth.generate import generate_traces

            nxt = out / "_traces" if corpus.filters else out
            teacher = teacher_of(corpus)
            resolved = {}
            if teacher is not None:
                seq_len = model_config(study, teacher=teacher).seq_len
                resolved = {
                    "teacher_model": str(teacher_export(plan, teacher)),
                    "teacher_id": f"teacher:{teacher}@{plan[f'teacher:{teacher}'].fingerprint}",
                    "seq_len": seq_len,
                }
            generate_traces(current, nxt, generate_config(corpus, where, **resolved), executor=plan.data_executor)
            current = nxt
        if corpus.filters:
            from frontload.filters.pipeline import run_filters

            # Task folders are read only for `decontaminate = true`: only then is the corpus step planned
            # after the task steps, and run side by side with them (Ray, Slurm) they may not exist yet.
            tasks = study.eval.tasks if corpus.filters.get("decontaminate") is True else []
            cfg = filter_config(corpus, where, [f"{t.name}={task_spec(plan, t).path}" for t in tasks])
            run_filters(current, out, cfg, executor=plan.data_executor)

    return action


def tokenizer_action(plan: StudyPlan):
    study = plan.study

    def action(out: Path) -> None:
        from frontload.corpus.tokenizer import train_tokenizer

        # Corpus folders, not their files: the readers' one rule picks data/, and a shard set's input
        # fingerprint is then the corpus's own (content and config), never a path or a gzip time.
        inputs = [plan[f"corpus:{c}"].output for c in study.tokenizer.train_on]
        train_tokenizer(inputs, out, study.tokenizer.vocab_size)

    return action


def shards_action(plan: StudyPlan, name: str, sft: bool):
    def action(out: Path) -> None:
        from frontload.corpus.shards import build_shards
        from frontload.corpus.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(plan["tokenizer"].output)
        build_shards([plan[f"corpus:{name}"].output], out, tokenizer, sft=sft, executor=plan.data_executor)

    return action


# -- training and evaluation steps ---------------------------------------------------------------
def final_checkpoint(step: Step) -> Path:
    """The final checkpoint a finished training step recorded in its DONE file."""
    return Path((step.output / DONE).read_text().strip())


def shard_dirs(plan: StudyPlan, names, sft: bool = False) -> dict[str, str]:
    suffix = ":sft" if sft else ""
    return {n: str(plan[f"shards:{n}{suffix}"].output) for n in names}


def _repeat_caps(study: Study) -> dict[str, float]:
    return {name: c.max_epochs for name, c in study.corpora.items() if c.max_epochs is not None}


def mix_schedule(study: Study, phase: str, stages) -> Any:
    from frontload.corpus.mix import MixSchedule

    return MixSchedule(**{phase: list(stages)}, repeat_caps=_repeat_caps(study))


def prefix_action(plan: StudyPlan, stages, seed: int, *, total_steps: int, stop_at: int, outer: Step | None = None):
    """Train shared pretraining stages: the schedule of the whole phase (``total_steps``), ending at ``stop_at``;
    an inner prefix continues from its ``outer`` prefix's final checkpoint."""
    study = plan.study

    def action(out: Path) -> Path:
        from frontload.corpus.tokenizer import load_tokenizer
        from frontload.study_file import model_config, phase_config
        from frontload.train.pretrain import pretrain

        tok_dir = plan["tokenizer"].output
        cfg = phase_config(
            study,
            "pretrain",
            run_dir=str(out),
            shards=shard_dirs(plan, sorted({s for st in stages for s in st.weights})),
            mix=mix_schedule(study, "pretrain", stages),
            tokenizer=str(tok_dir),
            seed=seed,
            steps=total_steps,
            stop_at=stop_at,
            resume_from=str(final_checkpoint(outer)) if outer is not None else None,
            model=model_config(study, load_tokenizer(tok_dir).vocab_size),
        )
        return pretrain(cfg)

    return action


def pretrain_action(plan: StudyPlan, arm: ArmSection, seed: int, prefix: Step | None = None):
    """An arm's pretraining; with ``prefix`` it continues from that shared prefix's final checkpoint."""
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
            mix=mix_schedule(study, "pretrain", arm.pretrain),
            tokenizer=str(tok_dir),
            arm=arm.name,
            sweep=arm.sweep,
            seed=seed,
            resume_from=str(final_checkpoint(prefix)) if prefix is not None else None,
            model=model_config(study, load_tokenizer(tok_dir).vocab_size),
        )
        return pretrain(cfg)

    return action


def sft_action(plan: StudyPlan, arm: ArmSection, seed: int, parent: Step):
    study = plan.study

    def action(out: Path) -> Path:
        from frontload.study_file import phase_config
        from frontload.train.sft import sft

        cfg = phase_config(
            study,
            "sft",
            run_dir=str(out),
            shards=shard_dirs(plan, arm.sft.weights, sft=True),
            mix=mix_schedule(study, "sft", [arm.sft]),
            arm=arm.name,
            sweep=arm.sweep,
            seed=seed,
            init_from=str(final_checkpoint(parent)),
        )
        return sft(cfg)

    return action


def rl_action(plan: StudyPlan, arm: ArmSection, seed: int, parent: Step):
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
            sweep=arm.sweep,
            seed=seed,
            init_from=str(final_checkpoint(parent)),
            prompts=str(plan[f"corpus:{arm.rl.problems}"].output),
            **overrides,
        )
        return rl(cfg)

    return action


def teacher_action(plan: StudyPlan, name: str):
    """Train a study teacher (short pretraining, then SFT) with frontload's own phases and export it.

    The run folders ``pretrain/`` and ``sft/`` resume from their checkpoints, so a killed teacher
    continues where it stopped; the export (Hugging Face format, what vLLM serves) is ``export/``.
    """
    study = plan.study
    teacher = study.teachers[name]

    def action(out: Path) -> Path:
        from frontload.corpus.tokenizer import load_tokenizer
        from frontload.study_file import model_config, phase_config
        from frontload.train.pretrain import pretrain
        from frontload.train.sft import sft

        seed = teacher.seed if teacher.seed is not None else study.study.seed
        tok_dir = plan["tokenizer"].output
        sources = sorted({s for st in teacher.pretrain for s in st.weights})
        cfg = phase_config(
            study,
            "pretrain",
            teacher=name,
            run_dir=str(out / "pretrain"),
            shards=shard_dirs(plan, sources),
            mix=mix_schedule(study, "pretrain", teacher.pretrain),
            tokenizer=str(tok_dir),
            seed=seed,
            model=model_config(study, load_tokenizer(tok_dir).vocab_size, teacher=name),
        )
        ckpt = pretrain(cfg)
        if teacher.sft is not None:
            cfg = phase_config(
                study,
                "sft",
                teacher=name,
                run_dir=str(out / "sft"),
                shards=shard_dirs(plan, teacher.sft.weights, sft=True),
                mix=mix_schedule(study, "sft", [teacher.sft]),
                seed=seed,
                init_from=str(ckpt),
            )
            ckpt = sft(cfg)
        return _export_teacher(ckpt, out / TEACHER_EXPORT)

    return action


def _export_teacher(ckpt: Path, out: Path) -> Path:
    """Export on one rank: under ``torchrun`` every rank loads (the checkpoint load is collective), rank 0 writes."""
    import torch.distributed as dist

    from frontload.train.export import export_hf

    # A kill between the export and DONE leaves a complete export; replacing it writes the same bytes.
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return export_hf(ckpt, out, overwrite=True)
    from frontload.train.checkpoint import load_model
    from frontload.train.export import export_model

    model, config, meta = load_model(ckpt)
    if dist.get_rank() == 0:
        info = {
            "checkpoint": str(ckpt),
            "phase": meta.get("phase"),
            "step": meta.get("step"),
            "model": as_dict(config),
        }
        export_model(model, config, Path(ckpt) / "tokenizer", out, info, overwrite=True)
    dist.barrier()
    return out


def teacher_export(plan: StudyPlan, name: str) -> Path:
    """The Hugging Face folder of a study teacher (what ``teacher:NAME`` resolves to)."""
    return plan[f"teacher:{name}"].output / TEACHER_EXPORT


def eval_action(plan: StudyPlan, arm: ArmSection, seed: int, phase_step: Step):
    study = plan.study

    def action(out: Path) -> None:
        from frontload.core.events import RunFolder
        from frontload.train.evaluate import EvalConfig, evaluate

        ckpt = final_checkpoint(phase_step)
        tasks = [task_spec(plan, t) for t in study.eval.tasks]
        perplexity = [str(plan[s].output) for s in plan.perplexity]
        config = from_mapping(
            EvalConfig,
            {**study.eval.decoding(), "seed": seed, "perplexity": perplexity},
            f"{study.path}: [eval]",
        )
        with RunFolder(
            out,
            stage="eval",
            arm=arm.name,
            phase=phase_step.kind,
            parent=str(ckpt),
            config={"checkpoint": str(ckpt), "tasks": [as_dict(t) for t in tasks], **as_dict(config)},
            extra={"seed": seed, "sweep": arm.sweep},
        ) as run:
            results = evaluate(ckpt, tasks, config, run)
        from frontload.train.evaluate import format_table

        print(format_table(results))

    return action
