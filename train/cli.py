"""``frontload train pretrain|sft|rl``, ``frontload eval`` and ``frontload export``: the train stage's command line.

A training command reads one TOML file whose top-level keys are the phase config's fields
(:class:`~frontload.train.pretrain.PretrainConfig`, :class:`~frontload.train.sft.SFTConfig` or
:class:`~frontload.train.rl.RLConfig`; ``[model]``, ``[optim]``, ``[shards]``, ``[[mix.pretrain]]``
...), applies the command-line overrides and calls the plain function. An override option is made
from the config field it sets (its name, type, choices and comment), so the two cannot drift apart.
torch and Megatron are imported inside the handlers so that ``frontload --help`` stays instant
(the config classes import neither at module level). Under ``torchrun`` every rank runs the same command.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import tomllib
from pathlib import Path
from typing import Any

from frontload.core.errors import FrontloadError
from frontload.train import export as export_cli

# Fields a training command may override from the command line, per phase.
PHASE_OPTIONS = ("run_dir", "plan", "tokenizer", "init_from", "steps", "save_every", "exit_after")
RL_OPTIONS = (
    "run_dir",
    "init_from",
    "prompts",
    "steps",
    "prompts_per_step",
    "group_size",
    "save_every",
    "exit_after",
    "rollout_backend",
    "seed",
)


def read_phase_table(path: str) -> dict[str, Any]:
    """The TOML table of a training config file; errors name the file and line."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FrontloadError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise FrontloadError(f"{path}: {e}") from None


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """What an option needs from a config field: its argparse type, choices and one-line comment."""

    type: Any
    choices: tuple | None
    help: str


def config_fields(module: str, cls: str) -> dict[str, FieldDoc]:
    """The fields of dataclass ``cls`` in ``module``, read from its source without importing it.

    Reading the source keeps ``frontload --help`` free of torch (the phase configs' modules import it).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FrontloadError(f"{module}: module not found")
    source = Path(spec.origin).read_text(encoding="utf-8")
    lines = source.splitlines()
    node = next(
        (n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == cls),
        None,
    )
    if node is None:
        raise FrontloadError(f"{spec.origin}: no class {cls}")
    out = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            _, _, comment = lines[stmt.end_lineno - 1].partition("  # ")
            kind, choices = _option_type(stmt.annotation)
            out[stmt.target.id] = FieldDoc(type=kind, choices=choices, help=comment.strip() or stmt.target.id)
    return out


_SCALARS = {"int": int, "float": float, "str": str}


def _option_type(ann: ast.expr) -> tuple[Any, tuple | None]:
    """(argparse type, choices) of an annotation: ``X | None`` is X, a ``Literal`` gives its choices."""
    if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) and ann.value.id == "Literal":
        elts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
        choices = tuple(e.value for e in elts if isinstance(e, ast.Constant))
        return type(choices[0]), choices
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        for side in (ann.left, ann.right):
            kind, choices = _option_type(side)
            if kind is not None:
                return kind, choices
        return str, None
    if isinstance(ann, ast.Name):
        return _SCALARS.get(ann.id, str if ann.id != "None" else None), None
    return str, None


def add_field_options(parser: argparse.ArgumentParser, fields: dict[str, FieldDoc], names: tuple[str, ...]) -> None:
    """One ``--field-name`` option per named config field, typed and documented from the field."""
    for name in names:
        f = fields[name]
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=f.type, choices=f.choices, help=f.help)


def field_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields given on the command line (options left out keep the file's value)."""
    out = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if getattr(args, "no_progress", False):
        out["progress"] = False
    return out


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = field_overrides(args, PHASE_OPTIONS)
    for item in getattr(args, "shard", None) or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise FrontloadError(f"--shard {item!r}: expected NAME=FOLDER")
        out.setdefault("shards", {})[name] = folder
    return out


def _load(cls, args: argparse.Namespace):
    from frontload.core.config import from_mapping

    table = read_phase_table(args.config)
    overrides = _overrides(args)
    if "shards" in overrides:
        overrides["shards"] = {**table.get("shards", {}), **overrides["shards"]}
    return from_mapping(cls, {**table, **overrides}, where=args.config)


def _run_pretrain(args: argparse.Namespace) -> int:
    from frontload.train.pretrain import PretrainConfig, pretrain

    print(pretrain(_load(PretrainConfig, args)))
    return 0


def _run_sft(args: argparse.Namespace) -> int:
    from frontload.train.sft import SFTConfig, sft

    print(sft(_load(SFTConfig, args)))
    return 0


def _run_rl(args: argparse.Namespace) -> int:
    from frontload.core.config import from_mapping
    from frontload.train.rl import RLConfig, rl

    table = read_phase_table(args.config)
    overrides = field_overrides(args, RL_OPTIONS)
    print(rl(from_mapping(RLConfig, {**table, **overrides}, where=args.config)))
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from frontload.core.config import as_dict
    from frontload.core.events import RunFolder
    from frontload.train.checkpoint import read_meta
    from frontload.train.evaluate import EvalConfig, TaskSpec, evaluate, format_table

    if not args.tasks and not args.perplexity:
        raise FrontloadError("give --tasks FILE... and/or --perplexity SHARD_DIR...")
    tasks = [
        TaskSpec(
            path=p,
            question_field=args.question_field,
            answer_field=args.answer_field,
            id_field=args.id_field,
            template=args.template,
            limit=args.limit,
        )
        for p in args.tasks or []
    ]
    config = EvalConfig(
        samples=args.samples,
        temperature=args.temperature if args.temperature is not None else (1.0 if args.samples > 1 else 0.0),
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        pass_k=args.pass_k or [],
        batch_size=args.batch_size,
        seed=args.seed,
        perplexity=args.perplexity or [],
        backend=args.backend,
    )
    run = None
    if args.out:
        meta = read_meta(args.checkpoint)
        run = RunFolder(
            args.out,
            stage="eval",
            config={"checkpoint": str(args.checkpoint), "tasks": as_dict(tasks), "eval": as_dict(config)},
            phase=meta.get("phase"),
            parent=str(args.checkpoint),
        )
    try:
        results = evaluate(args.checkpoint, tasks, config, run)
    finally:
        if run is not None:
            run.close()
    print(format_table(results))
    return 0


def _phase_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML file whose top-level keys are the phase config's fields")
    p.add_argument("--shard", action="append", metavar="NAME=FOLDER", help="add or replace one shard set (repeatable)")
    add_field_options(p, config_fields("frontload.train.loop", "PhaseConfig"), PHASE_OPTIONS)
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")


def _rl_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML file whose top-level keys are RLConfig fields ([loss], [reward], [optim])")
    add_field_options(p, config_fields("frontload.train.rl", "RLConfig"), RL_OPTIONS)
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (has meta.json)")
    p.add_argument("--tasks", nargs="*", default=[], help="task files or folders (JSONL, Parquet, saved HF dataset)")
    p.add_argument("--question-field", default="question", help="dotted field of the question")
    p.add_argument("--answer-field", default="answer", help="dotted field of the gold answer")
    p.add_argument("--id-field", default="id", help="dotted field of the question id")
    p.add_argument("--template", default=None, help="prompt template with {question}; default: the chat format")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions of each task")
    p.add_argument("--samples", type=int, default=1, help="completions per question (pass@1 averages them)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy; default 0, or 1 when --samples > 1")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--pass-k", type=int, nargs="*", default=None, help="k values for pass@k (default: --samples)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer budget per completion")
    p.add_argument("--batch-size", type=int, default=32, help="completions decoded together")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--perplexity", nargs="*", default=[], help="shard set folders for held-out perplexity")
    p.add_argument(
        "--backend",
        choices=("megatron", "vllm"),
        default="megatron",
        help="who answers: the Megatron model or vLLM on its export",
    )
    p.add_argument("--out", default=None, help="run folder for predictions and evals events")


def add_commands(subparsers) -> None:
    """Register ``train pretrain|sft|rl``, ``eval`` and ``export``."""
    train = subparsers.add_parser("train", help="train the model: pretrain, sft, rl")
    train.set_defaults(_parser=train)
    sub = train.add_subparsers(dest="train_command", metavar="PHASE")

    p = sub.add_parser("pretrain", help="pretrain a fresh model on the pretraining stages of a mix")
    _phase_options(p)
    p.set_defaults(func=_run_pretrain)

    p = sub.add_parser("sft", help="fine-tune a pretraining checkpoint on SFT shard sets (loss on responses)")
    _phase_options(p)
    p.set_defaults(func=_run_sft)

    p = sub.add_parser("rl", help="GRPO with verifiable rewards from an SFT checkpoint")
    _rl_options(p)
    p.set_defaults(func=_run_rl)

    p = subparsers.add_parser("eval", help="evaluate a checkpoint on task files and held-out shard sets")
    _eval_options(p)
    p.set_defaults(func=_run_eval)

    export_cli.add_commands(subparsers)
