"""``frontload corpus``: train a tokenizer, write Megatron shard sets, verify folders.

Each handler only parses its arguments and calls a plain function of this stage
(:func:`frontload.corpus.tokenizer.train_tokenizer`, :func:`frontload.corpus.shards.build_shards`,
:func:`frontload.corpus.verify.verify_folder`).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``frontload corpus ...``."""
    corpus = sub.add_parser("corpus", help="tokenizers, Megatron shard sets and their verification")
    corpus.set_defaults(_parser=corpus)
    csub = corpus.add_subparsers(dest="corpus_command", metavar="COMMAND")

    tok = csub.add_parser("tokenizer", help="train a SentencePiece tokenizer (with an exact tokenizer.json)")
    tok.set_defaults(_parser=tok)
    tsub = tok.add_subparsers(dest="tokenizer_command", metavar="COMMAND")
    train = tsub.add_parser("train", help="train a tokenizer on JSONL/Parquet files or saved HF datasets")
    train.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files or folders (PATH::SPLIT for a split)")
    train.add_argument("-o", "--output", required=True, metavar="TOK_DIR", help="tokenizer folder to write")
    train.add_argument("--vocab-size", type=int, required=True, help="number of pieces, specials and bytes included")
    train.add_argument("--text-field", default="text", help="dotted path of the text in each record")
    train.add_argument("--max-sentences", type=int, default=2_000_000, help="lines sampled for training")
    train.set_defaults(func=_tokenizer_train)

    shards = csub.add_parser("shards", help="tokenize documents into Megatron .bin/.idx shards with a manifest")
    shards.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus files or folders (PATH::SPLIT for a split)")
    shards.add_argument("-o", "--output", required=True, metavar="SHARD_DIR", help="shard set folder to write")
    shards.add_argument(
        "--tokenizer", required=True, metavar="TOK_DIR", help="tokenizer folder, .model or tokenizer.json"
    )
    shards.add_argument("--text-field", default="text", help="dotted path of the text in each record")
    shards.add_argument("--sft", action="store_true", help="prompt/response records: also write loss masks")
    shards.add_argument(
        "--prompt-field", default="metadata.prompt", help="dotted path of the prompt (--sft; also finds top-level)"
    )
    shards.add_argument(
        "--response-field", default="metadata.response", help="dotted path of the response (--sft; also top-level)"
    )
    shards.add_argument("--tasks", type=int, default=2, help="datatrove tasks, one shard each")
    shards.add_argument("--workers", type=int, default=2, help="tasks run at once (output does not depend on it)")
    shards.add_argument("--strict", action="store_true", help="stop at the first bad record instead of dropping it")
    shards.add_argument("--overwrite", action="store_true", help="replace a finished shard set made from other inputs")
    shards.add_argument(
        "--allow-empty", action="store_true", help="write the set even when every record was dropped (else an error)"
    )
    shards.set_defaults(func=_shards)

    verify = csub.add_parser("verify", help="recheck a shard set or corpus folder against its manifest")
    verify.add_argument("folder", metavar="DIR", help="shard set or corpus folder")
    verify.add_argument("--tokenizer", metavar="TOK_DIR", help="also check the set was made with this tokenizer")
    verify.set_defaults(func=_verify)


def _tokenizer_train(args: argparse.Namespace) -> int:
    from frontload.corpus.tokenizer import train_tokenizer

    tok = train_tokenizer(
        args.inputs, args.output, args.vocab_size, text_field=args.text_field, max_sentences=args.max_sentences
    )
    print(f"{tok.path}: {tok.vocab_size} pieces, fingerprint {tok.fingerprint}")
    acc = tok.account
    print(f"trained on {acc.kept} of {acc.inputs} records", end="")
    if acc.dropped:
        reasons = ", ".join(f"{r} ({n})" for r, n in acc.dropped.items())
        print(f"; {sum(acc.dropped.values())} dropped: {reasons} — see {tok.path / 'rejects'}/")
    else:
        print()
    return 0


def _shards(args: argparse.Namespace) -> int:
    from frontload.corpus.shards import build_shards

    manifest = build_shards(
        args.inputs,
        args.output,
        args.tokenizer,
        text_field=args.text_field,
        sft=args.sft,
        prompt_field=args.prompt_field,
        response_field=args.response_field,
        tasks=args.tasks,
        workers=args.workers,
        on_error="raise" if args.strict else "drop",
        overwrite=args.overwrite,
        allow_empty=args.allow_empty,
        progress=True,
    )
    acc = manifest.account.to_dict() if manifest.account else None
    print(json.dumps({"folder": args.output, "counts": manifest.counts, "account": acc}, indent=2))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from frontload.corpus.verify import verify_folder

    problems = verify_folder(args.folder, tokenizer=args.tokenizer)
    if problems:
        for p in problems:
            print(f"frontload: error: {p}", file=sys.stderr)
        return 1
    print(f"{args.folder}: ok")
    return 0
