"""``frontload filter IN_DIR -o OUT_DIR``: verify, score, threshold, deduplicate and decontaminate a traces folder.

The handler only turns options into a :class:`~frontload.filters.pipeline.FilterConfig` and calls
:func:`~frontload.filters.pipeline.run_filters`; datatrove and math-verify are imported inside.
"""

from __future__ import annotations

import argparse


def _csv(text: str) -> list[str]:
    return [] if text.strip().lower() in ("", "none") else [t.strip() for t in text.split(",") if t.strip()]


def cmd_filter(args: argparse.Namespace) -> int:
    from frontload.filters.pipeline import DEFAULT_RULE, FilterConfig, run_filters

    config = FilterConfig(
        verify_mode=args.verify_mode,
        verify_workers=args.verify_workers,
        tokenizer=args.tokenizer,
        rule=None if args.no_rule else (args.rule or DEFAULT_RULE),
        pass_rate_band=list(args.pass_rate_band) if args.pass_rate_band else None,
        keep=args.keep,
        dedup=_csv(args.dedup),
        dedup_on=_csv(args.dedup_on),
        minhash_ngrams=args.minhash_ngrams,
        decontaminate=list(args.decontaminate or []),
        ngram=args.ngram,
        question_field=args.question_field,
    )
    manifest = run_filters(
        args.in_dir, args.output, config, tasks=args.tasks, workers=args.workers, allow_empty=args.allow_empty
    )
    acc = manifest.account
    assert acc is not None
    print(f"wrote {args.output}: in={acc.inputs} kept={acc.kept} dropped={sum(acc.dropped.values())}")
    for reason, n in sorted(acc.dropped.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>8}  {reason}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``frontload filter``."""
    p = subparsers.add_parser(
        "filter",
        help="verify, score, threshold, deduplicate and decontaminate a traces folder into a corpus folder",
        description="Turn a traces folder (data/*.jsonl) into a filtered corpus folder with rejects/ and a "
        "manifest whose drop account balances.",
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="traces or corpus folder with data/*.jsonl")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="corpus folder to write")
    p.add_argument("--rule", help="threshold rule over scores, e.g. 'verify_v1 == \"correct\" and length_v1 < 4096'")
    p.add_argument("--no-rule", action="store_true", help="keep every scored record (no threshold step)")
    p.add_argument(
        "--pass-rate-band",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="keep problems whose pass rate is in [LO, HI]",
    )
    p.add_argument(
        "--keep", choices=("all", "best"), default="all", help="keep all passing traces per problem or only the best"
    )
    p.add_argument("--dedup", default="exact", help="comma list of exact,minhash (or none)")
    p.add_argument("--dedup-on", default="problem,trace", help="comma list of problem,trace: what dedup compares")
    p.add_argument("--minhash-ngrams", type=int, default=5, help="words per MinHash shingle")
    p.add_argument(
        "--decontaminate", nargs="+", metavar="EVAL", help="eval set files (JSONL/Parquet), NAME=PATH or PATH"
    )
    p.add_argument("--ngram", type=int, default=13, help="n-gram length for decontamination (13; 8 is stricter)")
    p.add_argument("--question-field", default="question", help="field of the eval files holding the question")
    p.add_argument(
        "--verify-mode", default="math", choices=("math", "exact", "numeric", "choice"), help="answer comparison"
    )
    p.add_argument("--verify-workers", type=int, default=1, help="math-verify processes per task")
    p.add_argument("--tokenizer", help="frontload tokenizer dir for length_v1 in tokens (default: whitespace words)")
    p.add_argument("--tasks", type=int, default=1, help="datatrove tasks (input shards processed in parallel)")
    p.add_argument("--workers", type=int, default=1, help="datatrove worker processes")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="write the corpus even when every record was dropped (else an error)",
    )
    p.set_defaults(func=cmd_filter, _parser=p)
