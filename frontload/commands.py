"""Study-level commands: ``frontload run``, ``frontload demo`` and ``frontload mix plan``.

These are the only commands that read a whole study file; the stage commands take folders.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

DEFAULT_STUDY = "default.toml"


def default_study_path() -> Path:
    """The shipped default study file."""
    return Path(str(resources.files("frontload") / "studies" / DEFAULT_STUDY))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def cmd_run(args: argparse.Namespace) -> int:
    from frontload.runner import run_study
    from frontload.study_file import load_study

    study = load_study(args.study, workspace=args.workspace)
    if args.executor == "ray":
        from frontload.ray_driver import run_on_ray

        return run_on_ray(study, address=args.ray_address, dry_run=args.dry_run, report=not args.no_report)
    if args.executor == "slurm":
        from frontload.jobs import write_job_scripts

        return write_job_scripts(study, executor=args.executor, submit=not args.dry_run, partition=args.partition)
    return run_study(
        study,
        dry_run=args.dry_run,
        only=args.only,
        report=not args.no_report,
        data_executor=args.data_executor,
        verbose=args.verbose,
        jobs=args.jobs,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    args.study = default_study_path()
    args.only = None
    args.executor = "local"
    args.no_report = False
    args.data_executor = "local"
    args.verbose = False
    return cmd_run(args)


def cmd_mix_plan(args: argparse.Namespace) -> int:
    from frontload.runner import print_mix_plans
    from frontload.study_file import load_study

    study = load_study(args.study, workspace=args.workspace)
    return print_mix_plans(study, arms=args.arm, out=args.output)


def add_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a study: build what is missing, reuse what exists, report")
    run.add_argument("study", type=Path, help="the study TOML file")
    run.add_argument("--dry-run", action="store_true", help="print what would run and what is reused; run nothing")
    run.add_argument("--workspace", help="override [study].workspace")
    run.add_argument("--only", action="append", metavar="STEP", help="run only this step id (repeatable)")
    run.add_argument(
        "--executor",
        choices=["local", "slurm", "ray"],
        default="local",
        help="local runs here; slurm writes job scripts (and submits them unless --dry-run); ray runs every "
        "step as a Ray task once the steps it reads are done (--dry-run: writes the plan only)",
    )
    run.add_argument("--no-report", action="store_true", help="skip the DuckDB ingest and report at the end")
    run.add_argument("--verbose", action="store_true", help="also print datatrove's per-task logs")
    run.add_argument(
        "--data-executor",
        choices=["local", "slurm", "ray"],
        default="local",
        help="datatrove executor for data steps (set by the job scripts)",
    )
    run.add_argument("--partition", help="Slurm partition for the job scripts")
    run.add_argument(
        "--jobs",
        type=_positive,
        metavar="N",
        help="run up to N independent steps at once here (overrides [study] jobs; results do not depend on it)",
    )
    run.add_argument("--ray-address", help="Ray cluster to run on (default: RAY_ADDRESS, else a local instance)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the shipped default study (the paper's question in miniature)")
    demo.add_argument("--dry-run", action="store_true", help="print what would run and what is reused")
    demo.add_argument("--workspace", help="override the default study's workspace")
    demo.add_argument("--jobs", type=_positive, metavar="N", help="run up to N independent steps at once")
    demo.set_defaults(func=cmd_demo)

    mix = sub.add_parser("mix", help="mix schedules: plan tokens, samples and repeats per source and stage")
    mix_sub = mix.add_subparsers(dest="mix_command", metavar="COMMAND")
    mix.set_defaults(_parser=mix)
    plan = mix_sub.add_parser("plan", help="print each arm's mix plan (builds the shard sets it needs)")
    plan.add_argument("study", type=Path, help="the study TOML file")
    plan.add_argument("--arm", action="append", help="only this arm (repeatable)")
    plan.add_argument("--workspace", help="override [study].workspace")
    plan.add_argument("-o", "--output", type=Path, help="also write the plans as JSON to this file")
    plan.set_defaults(func=cmd_mix_plan)
