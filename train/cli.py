"""``frontload train pretrain|sft`` (and, where their modules exist, ``train rl``, ``eval``, ``export``).

A training command reads one TOML file whose top-level keys are the phase config's fields
(:class:`~frontload.train.pretrain.PretrainConfig` or :class:`~frontload.train.sft.SFTConfig`;
``[model]``, ``[optim]``, ``[shards]``, ``[[mix.pretrain]]`` ...), applies the command-line
overrides and calls the plain function. torch and Megatron are imported inside the handlers so
that ``frontload --help`` stays instant. Under ``torchrun`` every rank runs the same command.
"""

from __future__ import annotations

import argparse
import importlib
import tomllib
from pathlib import Path
from typing import Any

from frontload.core.errors import FrontloadError

# Modules of this stage that add their own commands when present: (module, where they register).
OPTIONAL = (("frontload.train.rl", "train"), ("frontload.train.evaluate", "top"), ("frontload.train.export", "top"))


def read_phase_table(path: str) -> dict[str, Any]:
    """The TOML table of a training config file; errors name the file and line."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FrontloadError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise FrontloadError(f"{path}: {e}") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("run_dir", "steps", "exit_after", "init_from", "tokenizer", "plan", "save_every"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    for item in getattr(args, "shard", None) or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise FrontloadError(f"--shard {item!r}: expected NAME=FOLDER")
        out.setdefault("shards", {})[name] = folder
    if getattr(args, "no_progress", False):
        out["progress"] = False
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


def _phase_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML file whose top-level keys are the phase config's fields")
    p.add_argument("--run-dir", dest="run_dir", help="run folder (overrides run_dir); rerunning resumes from it")
    p.add_argument("--shard", action="append", metavar="NAME=FOLDER", help="add or replace one shard set (repeatable)")
    p.add_argument("--plan", help="train on this mix plan JSON instead of planning the config's mix")
    p.add_argument("--tokenizer", help="tokenizer dir copied into checkpoints")
    p.add_argument("--init-from", dest="init_from", help="checkpoint or run folder to start from")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the whole plan)")
    p.add_argument("--save-every", dest="save_every", type=int, help="checkpoint every N steps")
    p.add_argument("--exit-after", dest="exit_after", type=int, help="stop after N steps; rerun to continue")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")


def add_commands(subparsers) -> None:
    """Register ``train pretrain``, ``train sft`` and the optional modules' commands."""
    train = subparsers.add_parser("train", help="train the model: pretrain, sft (and rl)")
    train.set_defaults(_parser=train)
    sub = train.add_subparsers(dest="train_command", metavar="PHASE")

    p = sub.add_parser("pretrain", help="pretrain a fresh model on the pretraining stages of a mix")
    _phase_options(p)
    p.set_defaults(func=_run_pretrain)

    p = sub.add_parser("sft", help="fine-tune a pretraining checkpoint on SFT shard sets (loss on responses)")
    _phase_options(p)
    p.set_defaults(func=_run_sft)

    for name, where in OPTIONAL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        register = getattr(module, "add_commands", None)
        if register is not None:
            register(sub if where == "train" else subparsers)
