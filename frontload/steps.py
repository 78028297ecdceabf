"""What each step of a study does: thin adapters from the study's tables to the stages' functions.

Each ``*_action`` returns a function ``action(out_dir) -> result`` that the runner calls with the
step's output folder (a ``.partial`` folder for data steps). Stage modules are imported inside the
actions so that planning a study (``--dry-run``) imports no torch, vLLM or Megatron.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontload.corpus.config import as_dict, from_mapping
from frontload.corpus.fingerprint import atomic_write_json

if TYPE_CHECKING:
    from frontload.experiment import ArmSection, CorpusSection, EvalTaskSection, Study
    from frontload.study import Step, StudyPlan


def corpus_files(folder: Path) -> list[Path]:
    """The document files of a corpus folder."""
    files = sorted((folder / "data").glob("*.jsonl*")) + sorted((folder / "data").glob("*.parquet"))
    return files or [folder]


# -- data steps ---------------------------------------------------------------------------------
def task_action(study: Study, task: EvalTaskSection):
    def action(out: Path) -> None:
        if task.path is not None:
            from frontload.synth.sources import read_task_file

            rows = read_task_file(task.path, question_field=task.question_field, answer_field=task.answer_field)
        else:
            from frontload.synth.families import heldout_task

            rows = heldout_task(task.families, n=task.n, seed=task.seed, difficulty=tuple(task.difficulty))
        with open(out / "task.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        atomic_write_json(out / "task.json", {"name": task.name, "config": as_dict(task), "questions": len(rows)})

    return action


def task_file(plan: StudyPlan, name: str) -> Path:
    return plan[f"task:{name}"].output / "task.jsonl"


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
        else:
            from frontload.synth.sources import import_records

            import_records(
                first,
                paths=src.paths,
                kind=src.kind,
                text_field=src.text_field,
                question_field=src.question_field,
                answer_field=src.answer_field,
                solution_field=src.solution_field,
            )
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
            if table.pop("decontaminate", False):
                table["eval_sets"] = [str(task_file(plan, t.name)) for t in study.eval.tasks]
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
        build_shards(corpus_files(plan[f"corpus:{name}"].output), out, tokenizer, sft=sft)

    return action


# -- training and evaluation steps ---------------------------------------------------------------
def _final_checkpoint(step: Step) -> Path:
    return Path((step.output / "DONE").read_text().strip())


def shard_dirs(plan: StudyPlan, names, sft: bool = False) -> dict[str, Path]:
    suffix = ":sft" if sft else ""
    return {n: plan[f"shards:{n}{suffix}"].output for n in names}


def pretrain_action(plan: StudyPlan, arm: ArmSection):
    def action(out: Path) -> Path:
        raise NotImplementedError("pretrain_action: waiting for frontload.train")

    return action


def sft_action(plan: StudyPlan, arm: ArmSection):
    def action(out: Path) -> Path:
        raise NotImplementedError("sft_action: waiting for frontload.train")

    return action


def rl_action(plan: StudyPlan, arm: ArmSection):
    def action(out: Path) -> Path:
        raise NotImplementedError("rl_action: waiting for frontload.train")

    return action


def eval_action(plan: StudyPlan, arm: ArmSection, phase_step: Step):
    def action(out: Path) -> Path:
        raise NotImplementedError("eval_action: waiting for frontload.train")

    return action


def finish_study(plan: StudyPlan) -> Any:
    """Ingest every run folder into DuckDB, print the ablation and persistence tables and the plots."""
    from frontload.analysis import ingest
    from frontload.analysis.report import report

    ingest(plan.ws)
    return report(plan.ws)


def print_mix_plans(study: Study, arms: list[str] | None = None, out: Path | None = None) -> int:
    raise NotImplementedError
