"""The ``frontload`` command: one subcommand per stage, each mapped to a plain, importable function.

Every stage module ``frontload.<stage>.cli`` exposes ``add_commands(subparsers)``, which registers
its subcommands with ``set_defaults(func=handler)``; a handler takes the parsed namespace and
returns an exit status. Heavy libraries (torch, vLLM, Megatron) are imported inside handlers so
that ``frontload --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from frontload import __version__
from frontload.core.errors import FrontloadError

STAGE_CLIS = (
    "frontload.corpus.cli",
    "frontload.synth.cli",
    "frontload.filters.cli",
    "frontload.train.cli",
    "frontload.analysis.cli",
    "frontload.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frontload",
        description="Build reasoning corpora, mix them into pretraining/SFT/RL, train, and query the ablation.",
    )
    parser.add_argument("--version", action="version", version=f"frontload {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # `frontload corpus` without a subcommand prints that group's help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 0 if args.command is None else 2
    try:
        return int(func(args) or 0)
    except FrontloadError as e:
        print(f"frontload: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frontload: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
