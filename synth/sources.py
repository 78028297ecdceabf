"""Problem sources: built-in generators, local files, Hugging Face datasets on disk and reasoning-gym.

Every source ends as a corpus folder (``manifest.json`` of kind ``corpus`` + datatrove JSONL under
``data/``, rejected input under ``rejects/``) whose records follow the reasoning-record contract:
``text`` = prompt + response rendered with :mod:`frontload.core.chat`, ``id`` = a stable hash of
family and problem text, and ``metadata`` with problem, answer, source, family, difficulty, trace,
prompt, response and style.

Invariants:

- Problems are drawn in blocks of 64, each from its own ``random.Random`` seeded by (split, seed,
  block), so the same arguments give byte-identical records and blocks can be sharded by rank.
- A fixed slice of the problem-id hash space (``holdout``) is reserved for evaluation: training
  corpora never contain a problem whose id falls in it, and :func:`write_eval_tasks` draws only from
  it, so evaluation problems can never leak into training, whatever seeds are used.
- Output folders are complete or absent: they are built under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

from frontload.core.atomic import atomic_folder
from frontload.core.chat import render_example
from frontload.core.config import ConfigError, as_dict
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import atomic_path, fingerprint, sha256_file
from frontload.core.manifest import MANIFEST_NAME, Account, Manifest, require_records
from frontload.core.progress import progress_bar
from frontload.synth.families import FAMILIES

HOLDOUT = 0.05  # share of the problem-id space reserved for evaluation tasks
STYLES = ("concise", "detailed")
_MAX_DRAWS_PER_PROBLEM = 50  # redraws of one index that may land in the holdout slice
BLOCK = 64  # problems drawn from one seeded random stream; the unit of sharding
_STALE_DRAWS = 2000  # draws in a row without a new problem before the space counts as exhausted


def problem_id(family: str, problem: str) -> str:
    """Stable 16-hex id of a problem: a hash of its family and its text."""
    return hashlib.blake2b(f"{family}\x00{problem}".encode(), digest_size=8).hexdigest()


def in_holdout(pid: str, holdout: float) -> bool:
    """Whether a problem id lies in the slice of id space reserved for evaluation."""
    return int(pid, 16) < holdout * 2**64


def _split_base(split: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"frontload-synth:{split}:{seed}".encode()).digest()[:8], "big") << 32


@dataclass(kw_only=True)
class GeneratorSource:
    """Problems drawn from built-in families (see ``frontload synth families``)."""

    families: list[str]  # family names; problem i uses families[i % len(families)]
    n: int  # number of distinct problems to write
    seed: int = 0  # the same seed and config give byte-identical records
    difficulty: tuple[int, int] = (1, 4)  # inclusive range, each problem draws one level in it
    style: str = "concise"  # "concise" or "detailed" (long careful traces with checks)
    templates: int | None = None  # surface forms used per pool (phrasings, names, units); None = all
    holdout: float = HOLDOUT  # share of problem-id space kept out of training for evaluation

    def __post_init__(self) -> None:
        if isinstance(self.difficulty, int):
            self.difficulty = (self.difficulty, self.difficulty)
        self.difficulty = tuple(self.difficulty)
        if not self.families:
            raise ConfigError("families", "needs at least one family")
        for f in self.families:
            if f not in FAMILIES:
                raise ConfigError("families", f"unknown family {f!r} (known: {', '.join(FAMILIES)})")
        if self.n < 1:
            raise ConfigError("n", f"must be at least 1, got {self.n}")
        lo, hi = self.difficulty
        if not 1 <= lo <= hi <= 5:
            raise ConfigError("difficulty", f"must be a level or a range within 1..5, got {self.difficulty}")
        if self.style not in STYLES:
            raise ConfigError("style", f"must be one of {list(STYLES)}, got {self.style!r}")
        if self.templates is not None and self.templates < 1:
            raise ConfigError("templates", f"must be at least 1 (or unset for all), got {self.templates}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError("holdout", f"must be in [0, 1), got {self.holdout}")


@dataclass(kw_only=True)
class FileSource:
    """Problems read from a local JSONL/Parquet file (or folder of them) or a ``save_to_disk`` dataset."""

    path: str  # a .jsonl/.jsonl.gz/.parquet file, a folder of them, or a datasets.save_to_disk folder
    format: Literal["auto", "jsonl", "parquet", "hf"] = "auto"  # "auto" decides from the path
    question_field: str = "question"  # field holding the problem text
    answer_field: str = "answer"  # field holding the gold final answer
    solution_field: str | None = None  # optional field holding a worked solution (becomes the trace)
    answer_after: str | None = None  # keep only the text after the last occurrence of this marker (e.g. "####")
    family: str = "external"  # family label written into metadata
    split: str | None = None  # split of a DatasetDict on disk
    limit: int | None = None  # read at most this many records

    def __post_init__(self) -> None:
        if not Path(self.path).exists():
            raise ConfigError("path", f"{self.path} does not exist")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be at least 1, got {self.limit}")


@dataclass(kw_only=True)
class ReasoningGymSource:
    """Problems from reasoning-gym's seeded generators (optional extra: ``pip install reasoning-gym``)."""

    datasets: list[str]  # reasoning-gym dataset names, e.g. ["basic_arithmetic", "chain_sum"]
    n: int  # problems per dataset
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for create_dataset

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("datasets", "needs at least one dataset name")
        if self.n < 1:
            raise ConfigError("n", f"must be at least 1, got {self.n}")


# --------------------------------------------------------------------------------------------------
# drawing problems


def make_record(
    *,
    family: str,
    problem: str,
    answer: str,
    trace: str | None,
    source: str,
    difficulty: int | None = None,
    style: str | None = None,
    pid: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Document:
    """A reasoning record (contract 2) for one problem with its gold answer and (optional) worked solution."""
    prompt, response = render_example(problem, trace, answer)
    metadata = {
        "problem": problem,
        "answer": answer,
        "source": source,
        "family": family,
        "difficulty": difficulty,
        "trace": trace,
        "prompt": prompt,
        "response": response,
        "style": style,
    }
    if extra:
        metadata.update(extra)
    return Document(text=prompt + response, id=pid or problem_id(family, problem), metadata=metadata)


def draw_block(
    src: GeneratorSource, block: int, *, split: str = "train", base: int | None = None
) -> list[tuple[Document, bool]]:
    """Problems ``block * BLOCK … (block + 1) * BLOCK - 1`` of a source, each with whether it is usable for ``split``.

    One ``random.Random`` per block (seeded by split, seed and block) draws its problems in order:
    seeding costs about as much as drawing a problem, so it is paid once per block, and blocks are
    still independent units that ranks can share out. For ``split="train"`` a problem that lands in
    the holdout slice is redrawn from the same stream; for ``split="eval"`` the flag says whether it
    is in the holdout slice.
    """
    base = _split_base(split, src.seed) if base is None else base
    rng = random.Random(base + block)
    lo, hi = src.difficulty
    k = src.templates or 1 << 30
    detailed = src.style == "detailed"
    out = []
    for index in range(block * BLOCK, (block + 1) * BLOCK):
        name = src.families[index % len(src.families)]
        gen = FAMILIES[name].gen
        for _ in range(_MAX_DRAWS_PER_PROBLEM):
            level = rng.randint(lo, hi)
            problem, answer, steps = gen(rng, level, detailed, k)
            pid = problem_id(name, problem)
            held = in_holdout(pid, src.holdout)
            if split == "eval" or not held:
                break
        else:
            raise FrontloadError(
                f"family {name!r}: {_MAX_DRAWS_PER_PROBLEM} draws in a row fell into the holdout slice "
                f"(holdout={src.holdout}); lower holdout or widen difficulty/templates"
            )
        doc = make_record(
            family=name,
            problem=problem,
            answer=answer,
            trace="\n".join(steps),
            source=f"generator:{name}",
            difficulty=level,
            style=src.style,
            pid=pid,
        )
        out.append((doc, held if split == "eval" else True))
    return out


def iter_problems(src: GeneratorSource, *, split: str = "train", account: Account | None = None) -> Iterator[Document]:
    """``src.n`` distinct problems in a fixed order; duplicates (and for eval, non-holdout draws) are skipped."""
    base = _split_base(split, src.seed)
    seen: set[str] = set()
    # Give up once this many draws in a row bring nothing new: the space is (nearly) exhausted.
    patience = _STALE_DRAWS * (1 if split == "train" else max(1, round(1 / max(src.holdout, 1e-9))))
    index = stale = 0
    while len(seen) < src.n:
        if stale >= patience:
            raise FrontloadError(
                f"families {src.families} at difficulty {src.difficulty} with templates={src.templates} give fewer "
                f"than {src.n} distinct {split} problems ({len(seen)} found, then {stale} draws without a new one); "
                "lower n or widen difficulty/templates"
            )
        if index % BLOCK == 0:
            block = draw_block(src, index // BLOCK, split=split, base=base)
        doc, usable = block[index % BLOCK]
        index += 1
        stale += 1
        if account is not None:
            account.inputs += 1
        if not usable:
            if account is not None:
                account.drop("training_id_space")
            continue
        if doc.id in seen:
            if account is not None:
                account.drop("duplicate")
            continue
        seen.add(doc.id)
        stale = 0
        if account is not None:
            account.kept += 1
        yield doc


# --------------------------------------------------------------------------------------------------
# writing corpus folders


def _existing(out_dir: Path, fp: str) -> Manifest | None:
    if (out_dir / MANIFEST_NAME).exists():
        m = Manifest.read(out_dir, kind="corpus")
        if m.fingerprint == fp:
            return m
    return None


def _writer(folder: Path) -> JsonlWriter:
    # No compression: gzip stores a timestamp, and the same arguments must give byte-identical files.
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None)


def _write_docs(
    out_dir: Path, docs: Iterable[Document], rejects: Iterable[Document] = (), *, total: int | None = None, desc: str
) -> tuple[Counter, Counter, int]:
    per_family: Counter = Counter()
    per_difficulty: Counter = Counter()
    with _writer(out_dir / "data") as w:
        for doc in progress_bar(docs, total=total, desc=desc, unit="problem", mininterval=1.0, disable=None):
            w.write(doc, rank=0)
            per_family[doc.metadata["family"]] += 1
            per_difficulty[str(doc.metadata.get("difficulty"))] += 1
    n_rejects = 0
    rejects = list(rejects)
    if rejects:
        with _writer(out_dir / "rejects") as w:
            for doc in rejects:
                w.write(doc, rank=0)
                n_rejects += 1
    return per_family, per_difficulty, n_rejects


def _file_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(folder.rglob("*.jsonl")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_problems(
    out_dir: str | os.PathLike,
    *,
    families: list[str],
    n: int,
    seed: int = 0,
    difficulty: int | tuple[int, int] = (1, 4),
    style: str = "concise",
    templates: int | None = None,
    holdout: float = HOLDOUT,
    overwrite: bool = False,
) -> Manifest:
    """Write ``n`` distinct generated problems with gold traces as a corpus folder; reuse it if already built."""
    src = GeneratorSource(
        families=list(families),
        n=n,
        seed=seed,
        difficulty=difficulty,
        style=style,
        templates=templates,
        holdout=holdout,
    )
    return write_source(out_dir, src, overwrite=overwrite)


def write_source(
    out_dir: str | os.PathLike, src: GeneratorSource | FileSource | ReasoningGymSource, *, overwrite: bool = False
) -> Manifest:
    """Build the corpus folder of any problem source; an existing folder with the same fingerprint is reused."""
    out_dir = Path(out_dir)
    config = {"kind": type(src).__name__, **as_dict(src)}
    inputs_fp = _source_input_fingerprint(src)
    fp = fingerprint("synth.problems", config, inputs_fp)
    if (m := _existing(out_dir, fp)) is not None:
        return m
    account = Account()
    rejects: list[Document] = []
    if isinstance(src, GeneratorSource):
        docs: Iterable[Document] = iter_problems(src, split="train", account=account)
        total = src.n
    elif isinstance(src, FileSource):
        docs, total = _file_problems(src, account, rejects), src.limit
    else:
        docs, total = _gym_problems(src, account, rejects), src.n * len(src.datasets)
    with atomic_folder(out_dir, replace=overwrite, what="problem set (pass overwrite to replace it)") as tmp:
        per_family, per_difficulty, n_rejects = _write_docs(tmp, docs, rejects, total=total, desc="problems")
        # A problem set with no problem is a wrong field or file, not a result (the staging folder goes).
        require_records(account, out_dir, None, allow_empty=False, hint="check the source's path and field names")
        counts = {"documents": sum(per_family.values()), "rejects": n_rejects}
        counts.update({f"family:{k}": v for k, v in sorted(per_family.items())})
        manifest = Manifest(
            kind="corpus",
            fingerprint=fp,
            config=config,
            counts=counts,
            account=account,
            extra={
                "stage": "problems",
                "difficulty_counts": dict(sorted(per_difficulty.items())),
                "files": _file_hashes(tmp),
                "input_fingerprint": inputs_fp,
            },
        )
        manifest.write(tmp)
    return manifest


def _source_input_fingerprint(src: Any) -> str | None:
    if isinstance(src, FileSource):
        from frontload.corpus.readers import input_fingerprint

        return input_fingerprint([src.path])  # the same files, by the same rule, as the reader below
    return None


# --------------------------------------------------------------------------------------------------
# external sources


def _file_format(src: FileSource) -> str:
    if src.format != "auto":
        return src.format
    p = Path(src.path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
            return "hf"
        return "files"
    return "parquet" if p.suffix == ".parquet" else "jsonl"


def _raw_records(src: FileSource) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(file, line or row number, record)`` for every input record."""
    p = Path(src.path)
    fmt = _file_format(src)
    if fmt == "hf":
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if src.split is None:
                raise ConfigError("split", f"{p} holds splits {list(ds)}; choose one")
            if src.split not in ds:
                raise ConfigError("split", f"{p} has no split {src.split!r} (has {list(ds)})")
            ds = ds[src.split]
        for i, row in enumerate(ds):
            yield str(p), i + 1, row
        return
    from frontload.corpus.readers import file_format, input_files

    try:
        files = input_files(p)  # the one rule every reader follows
    except FrontloadError as e:
        raise ConfigError("path", str(e)) from None
    for f in files:
        if file_format(f) == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(f)
            except (pa.ArrowException, OSError) as e:
                raise FrontloadError(f"{f}: not a readable Parquet file (damaged or truncated?): {e}") from None
            for i, row in enumerate(table.to_pylist()):
                yield str(f), i + 1, row
            continue
        import gzip

        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield str(f), i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise FrontloadError(f"{f}:{i}: not valid JSON: {e.msg}") from None


def _field(row: dict[str, Any], name: str) -> Any:
    value: Any = row
    for part in name.split("."):  # dotted names reach into nested records
        if not isinstance(value, dict) or part not in value:
            raise KeyError(name)
        value = value[part]
    return value


def _file_problems(src: FileSource, account: Account, rejects: list[Document]) -> Iterator[Document]:
    name = Path(src.path).name
    kind = "hf" if _file_format(src) == "hf" else "file"
    seen: set[str] = set()
    for n_read, (file, line, row) in enumerate(_raw_records(src)):
        if src.limit is not None and n_read >= src.limit:
            return
        account.inputs += 1
        fields = [("question_field", src.question_field), ("answer_field", src.answer_field)]
        if src.solution_field:
            fields.append(("solution_field", src.solution_field))
        values = {}
        reason = None
        for key, fname in fields:
            try:
                values[key] = _field(row, fname)
            except KeyError:
                if n_read == 0:  # a missing field in the first record is a wrong field name, not bad data
                    raise ConfigError(
                        key, f"{file}:{line}: record has no field {fname!r} (fields: {', '.join(map(str, row))})"
                    ) from None
                reason = f"missing_{key.removesuffix('_field')}"
        question = str(values.get("question_field") or "").strip()
        answer = values.get("answer_field")
        answer = "" if answer is None else str(answer)
        if src.answer_after and src.answer_after in answer:
            answer = answer.rsplit(src.answer_after, 1)[1]
        answer = answer.strip()
        solution = values.get("solution_field")
        if reason is None and not question:
            reason = "empty_question"
        if reason is None and not answer:
            reason = "empty_answer"
        pid = problem_id(src.family, question)
        if reason is None and pid in seen:
            reason = "duplicate"
        if reason is not None:
            account.drop(reason)
            rejects.append(
                Document(
                    text=json.dumps(row, default=str), id=f"{Path(file).name}:{line}", metadata={"reason": reason}
                )
            )
            continue
        seen.add(pid)
        account.kept += 1
        yield make_record(
            family=src.family,
            problem=question,
            answer=answer,
            trace=str(solution).strip() if solution else None,
            source=f"{kind}:{name}",
            pid=pid,
            extra={"origin": {"file": file, "line": line}},
        )


def _gym_problems(src: ReasoningGymSource, account: Account, rejects: list[Document]) -> Iterator[Document]:
    try:
        import reasoning_gym
    except ImportError:
        raise FrontloadError("reasoning-gym is not installed: pip install reasoning-gym") from None
    for name in src.datasets:
        try:
            ds = reasoning_gym.create_dataset(name, size=src.n, seed=src.seed, **src.options)
        except Exception as e:  # reasoning-gym raises plain errors for unknown names and bad options
            raise ConfigError("datasets", f"reasoning-gym dataset {name!r}: {e}") from None
        seen: set[str] = set()
        for i in range(len(ds)):
            entry = ds[i]
            account.inputs += 1
            question, answer = str(entry["question"]).strip(), str(entry.get("answer") or "").strip()
            pid = problem_id(f"gym:{name}", question)
            reason = "empty_answer" if not answer else "duplicate" if pid in seen else None
            if reason:
                account.drop(reason)
                rejects.append(Document(text=question, id=f"{name}:{i}", metadata={"reason": reason}))
                continue
            seen.add(pid)
            account.kept += 1
            yield make_record(
                family=f"gym:{name}",
                problem=question,
                answer=answer,
                trace=None,
                source=f"reasoning_gym:{name}",
                pid=pid,
                extra={"gym_metadata": json.loads(json.dumps(entry.get("metadata", {}), default=str))},
            )


# --------------------------------------------------------------------------------------------------
# held-out evaluation tasks


def write_eval_tasks(
    path: str | os.PathLike,
    *,
    families: list[str],
    n: int,
    seed: int = 0,
    difficulty: int | tuple[int, int] = (1, 4),
    templates: int | None = None,
    holdout: float = HOLDOUT,
) -> Path:
    """Write ``n`` held-out problems as a JSONL task file (``id, question, answer, solution, family, difficulty``).

    ``solution`` is the gold worked solution (the trace a training record of the problem would hold), which
    the evaluator scores teacher-forced as ``solution_nll``.

    The problems come from the reserved holdout slice of id space and a separate seed stream, so no
    training corpus built with the same ``holdout`` can contain them.
    """
    if holdout <= 0:
        raise ConfigError("holdout", "must be > 0 to draw evaluation tasks from the reserved id space")
    src = GeneratorSource(
        families=list(families), n=n, seed=seed, difficulty=difficulty, templates=templates, holdout=holdout
    )
    path = Path(path)
    lines = []
    for doc in iter_problems(src, split="eval"):
        m = doc.metadata
        row = {
            "id": doc.id,
            "question": m["problem"],
            "answer": m["answer"],
            "solution": m.get("trace"),
            "family": m["family"],
            "difficulty": m["difficulty"],
            "source": m["source"],
        }
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
