"""The filter pipeline: a traces folder in, a filtered corpus folder plus rejects out, every record accounted for.

``run_filters(in_dir, out_dir, config)`` runs datatrove pipelines on local processes, or with
``executor="slurm"|"ray"`` on a cluster (:func:`frontload.corpus.executors.run_pipeline`):

1. **score** (``tasks`` ranks): row keys, ``verify_v1``, format/length/repetition/truncation/
   non-printable scores, ``steps_v1`` (each arithmetic step recomputed), per-rank rollout counts.
2. **select** (``tasks``): ``pass_rate_v1``, the difficulty band, the threshold rule, decontamination.
3. **problem groups** (1 task): exact problem dedup; one document per surviving problem.
4. **MinHash on problems** (datatrove's four stages, when ``minhash`` is on).
5. **dedup plan** (1 task) and **apply** (``tasks``): exact/near problem drops, best-of-problem, exact traces.
6. **MinHash on traces** (datatrove's four stages) and the final write to ``OUT/data``.

Outputs: ``OUT/data/<rank>.jsonl`` (datatrove JSONL, contract 2), ``OUT/rejects/<step>/<rank>.jsonl``
(each dropped record with ``metadata.filter_step`` and ``metadata.filter_reason``),
``OUT/run/`` (a RunFolder with one ``stats`` event per step) and ``OUT/manifest.json`` whose account
is computed from the files themselves: ``in`` = records scored + input lines that were no record
(read through the corpus stage's checked readers, kept in ``OUT/rejects/read/`` with file, line and
reason), ``kept`` = records in ``data/``, ``dropped`` = rejects by reason; a manifest that does not
balance is never written, and one that keeps nothing only with ``allow_empty``.

Restartable: work lives in ``OUT/work/<fingerprint>/``; datatrove's completion markers skip finished
ranks on a rerun, and a finished folder with the same fingerprint is returned as is.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers.jsonl import JsonlWriter

from frontload.core.config import ConfigError, as_dict
from frontload.core.errors import FrontloadError
from frontload.core.fingerprint import fingerprint, sha256_file
from frontload.core.manifest import MANIFEST_NAME, Account, Manifest, ManifestError, require_records
from frontload.filters.decontam import eval_set_name
from frontload.filters.threshold import Rule, RuleError
from frontload.filters.verify import MODES

DEFAULT_RULE = 'verify_v1 == "correct" and format_v1 == "ok" and not truncated_v1 and nonprintable_v1 == 0'
DEDUP_METHODS = ("exact", "minhash")
DEDUP_TARGETS = ("problem", "trace")
READ_STEP = "read"  # rejects/read/: input lines that are not records (bad UTF-8, bad JSON, no text, ...)


@dataclass(kw_only=True)
class FilterConfig:
    """What ``run_filters`` does to a traces folder; every field has a working default."""

    verify_mode: str = "math"  # how answers are compared: math, exact, numeric or choice
    verify_workers: int = 1  # processes per task for math-verify (1 = in the task itself)
    tokenizer: str | None = None  # frontload tokenizer dir for length_v1; None counts whitespace words
    rule: str | None = DEFAULT_RULE  # threshold rule over metadata scores; None keeps everything scored
    pass_rate_band: list[float] | None = None  # [lo, hi]: keep problems whose pass rate is within (open-r1 style)
    keep: str = "all"  # "all" verified traces per problem, or only the "best" one
    dedup: list[str] = field(default_factory=lambda: ["exact"])  # any of exact, minhash
    dedup_on: list[str] = field(default_factory=lambda: ["problem", "trace"])  # what dedup compares
    minhash_ngrams: int = 5  # words per MinHash shingle
    minhash_buckets: int = 14  # LSH bands; with 8 hashes each, pairs above ~0.72 Jaccard collide
    minhash_hashes_per_bucket: int = 8  # hashes per LSH band
    decontaminate: list[str] = field(default_factory=list)  # eval set files, "name=path" or a path
    ngram: int = 13  # n-gram length for decontamination (8 is stricter)
    question_field: str = "question"  # field of an eval file holding the question
    decontaminate_fields: list[str] = field(default_factory=lambda: ["response"])  # metadata checked besides problem

    def __post_init__(self) -> None:
        if self.verify_mode not in MODES:
            raise ConfigError("verify_mode", f"must be one of {list(MODES)}, got {self.verify_mode!r}")
        if self.verify_workers < 1:
            raise ConfigError("verify_workers", f"must be at least 1, got {self.verify_workers}")
        if self.rule is not None:
            try:
                Rule(self.rule)
            except RuleError as e:
                raise ConfigError("rule", str(e)) from None
        if self.pass_rate_band is not None:
            band = self.pass_rate_band
            if len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0:
                raise ConfigError("pass_rate_band", f"must be [lo, hi] with 0 <= lo <= hi <= 1, got {band!r}")
        if self.keep not in ("all", "best"):
            raise ConfigError("keep", f"must be 'all' or 'best', got {self.keep!r}")
        for name, values, known in (("dedup", self.dedup, DEDUP_METHODS), ("dedup_on", self.dedup_on, DEDUP_TARGETS)):
            bad = [v for v in values if v not in known]
            if bad:
                raise ConfigError(name, f"unknown {bad[0]!r} (choose from {', '.join(known)})")
        for name in ("minhash_ngrams", "minhash_buckets", "minhash_hashes_per_bucket"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.ngram < 1:
            raise ConfigError("ngram", f"must be at least 1, got {self.ngram}")
        for i, spec in enumerate(self.decontaminate):
            if not eval_set_name(spec)[1].exists():
                raise ConfigError(f"decontaminate[{i}]", f"eval set file not found: {eval_set_name(spec)[1]}")

    def build(
        self,
        in_dir: str | Path,
        out_dir: str | Path,
        *,
        tasks: int = 1,
        workers: int = 1,
        allow_empty: bool = False,
        executor: str = "local",
    ) -> FilterRun:
        """The runnable pipeline for one input folder."""
        return FilterRun(
            Path(in_dir), Path(out_dir), self, tasks=tasks, workers=workers, allow_empty=allow_empty, executor=executor
        )


class RejectWriter(JsonlWriter):
    """The exclusion writer of a step: ``OUT/rejects/<step>/<rank>.jsonl``, reason and step in metadata."""

    def __init__(self, out_dir: str, step: str, default_reason: str) -> None:
        super().__init__(f"{out_dir}/rejects/{step}", output_filename="${rank}.jsonl", compression=None)
        self.step = step
        self.default_reason = default_reason

    def write(self, document: Document, rank: int = 0, **kwargs) -> None:
        # MinHash's filter sets no reason; BaseFilter sets `filter_reason` when the filter gave one.
        document.metadata.setdefault("filter_reason", self.default_reason)
        document.metadata["filter_step"] = self.step
        super().write(document, rank, **kwargs)


def _input_files(folder: Path) -> list[Path]:
    from frontload.corpus.readers import input_files

    data = folder / "data"
    if not data.is_dir():
        raise FrontloadError(f"{data}: no such folder (expected a traces or corpus folder with data/)")
    return input_files(data)  # the readers' one rule: the files the score step reads


def _count_lines(folder: Path) -> int:
    n = 0
    for p in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
        with open(p, "rb") as f:
            n += sum(1 for line in f if line.strip())
    return n


def _reject_counts(rejects: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for p in sorted(rejects.rglob("*.jsonl")) if rejects.exists() else []:
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    # Records the reader could not read are {file, line, reason, ...}; filter drops are documents.
                    counts[d["reason"] if p.parent.name == READ_STEP else d["metadata"]["filter_reason"]] += 1
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ManifestError(f"{p}:{lineno}: reject without a readable filter_reason ({e})") from None
    return counts


def _content_config(config: FilterConfig) -> dict[str, Any]:
    """The config as the fingerprint sees it: eval sets and the tokenizer by content, never by path, so
    the same study in another workspace (or a moved one) is recognised as the same run."""
    d = as_dict(config)
    d["decontaminate"] = sorted(
        [name, sha256_file(path)] for name, path in (eval_set_name(s) for s in config.decontaminate)
    )
    if config.tokenizer is not None:
        from frontload.corpus.tokenizer import load_tokenizer

        d["tokenizer"] = load_tokenizer(config.tokenizer).fingerprint
    return d


class FilterRun:
    """One filter run over ``in_dir`` into ``out_dir``; ``run()`` returns the written manifest."""

    def __init__(
        self,
        in_dir: Path,
        out_dir: Path,
        config: FilterConfig,
        *,
        tasks: int = 1,
        workers: int = 1,
        allow_empty: bool = False,
        executor: str = "local",
    ):
        self.in_dir, self.out_dir, self.config = in_dir, out_dir, config
        self.executor = executor  # where the datatrove stages run: local, slurm or ray
        self.allow_empty = allow_empty  # keep a corpus that kept nothing instead of failing
        self.tasks, self.workers = max(1, tasks), max(1, workers)
        self.files = _input_files(in_dir)
        self.fingerprint = fingerprint("filters/v1", self._input_fingerprint(), _content_config(config))
        self.work = out_dir / "work" / self.fingerprint

    def _input_fingerprint(self) -> str:
        from frontload.corpus.readers import input_fingerprint

        try:
            return Manifest.read(self.in_dir).fingerprint
        except ManifestError:
            return input_fingerprint([self.in_dir / "data"])

    # ------------------------------------------------------------------------------------------
    def _exec(self, name: str, pipeline: list, tasks: int) -> dict[str, Any] | None:
        from frontload.corpus.executors import run_pipeline

        logs = self.work / "logs" / name
        run_pipeline(
            pipeline,
            kind=self.executor,
            tasks=tasks,
            workers=min(self.workers, tasks),
            logging_dir=str(logs),
            job_name=f"filters-{name}",
        )
        # Merge every rank's own file: after a resume, the executor's stats.json holds only the ranks it reran.
        from datatrove.utils.stats import PipelineStats

        parts = [
            PipelineStats.from_json(json.loads(p.read_text(encoding="utf-8")))
            for p in sorted((logs / "stats").glob("*.json"))
        ]
        return json.loads(sum(parts, start=PipelineStats()).to_json()) if parts else None

    def _reader(self, folder: Path | str, progress: bool = False):
        """datatrove's reader of this run's own intermediate folders (written by datatrove's writer)."""
        from datatrove.pipeline.readers import JsonlReader

        if not any(Path(folder).rglob("*.jsonl*")):
            return []  # every record was dropped upstream: datatrove takes a list as the (empty) data
        # No file_path in metadata: it would carry the workspace's absolute path into the corpus.
        return JsonlReader(
            str(folder), glob_pattern="*.jsonl*", recursive=True, doc_progress=progress, add_file_path=False
        )

    def _input_reader(self):
        """The checked reader of the input: every line a record or a counted reject in rejects/read/."""
        from frontload.corpus.readers import RecordSpec, make_reader

        return make_reader([self.in_dir / "data"], RecordSpec(), rejects_dir=self.out_dir / "rejects" / READ_STEP)

    def _writer(self, folder: Path | str):
        return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None)

    def _rejects(self, step: str, reason: str) -> RejectWriter:
        return RejectWriter(str(self.out_dir), step, reason)

    def _minhash(self, name: str, data: Path, field_name: str | None, exclusion, out: Path | None) -> list | None:
        """datatrove's four MinHash stages over ``data`` (hashing ``field_name``), writing survivors to ``out``."""
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig,
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )
        from datatrove.utils.text import TextNormConfig

        from frontload.filters.dedup import FieldAsText
        from frontload.filters.scores import RegexWordTokenizer

        cfg = self.config
        mh = MinhashConfig(
            n_grams=cfg.minhash_ngrams,
            num_buckets=cfg.minhash_buckets,
            hashes_per_bucket=cfg.minhash_hashes_per_bucket,
            # Numbers stay: problems that differ only in their numbers are different problems.
            norm_config=TextNormConfig(norm_numbers=False),
        )
        base = self.work / name
        to_text = [FieldAsText(field_name)] if field_name else []
        sig = MinhashDedupSignature(str(base / "sigs"), config=mh, language=RegexWordTokenizer())
        self._exec(f"{name}_1_signatures", [self._reader(data), *to_text, sig], self.tasks)
        buckets = MinhashDedupBuckets(str(base / "sigs"), str(base / "buckets"), config=mh)
        self._exec(f"{name}_2_buckets", [buckets], cfg.minhash_buckets)
        cluster = MinhashDedupCluster(str(base / "buckets"), str(base / "remove"), config=mh)
        self._exec(f"{name}_3_cluster", [cluster], 1)
        steps = [self._reader(data), MinhashDedupFilter(str(base / "remove"), exclusion_writer=exclusion)]
        if out is not None:
            steps.append(self._writer(out))
        return self._exec(f"{name}_4_filter", steps, self.tasks)

    # ------------------------------------------------------------------------------------------
    def run(self) -> Manifest:
        from frontload.core.events import RunFolder
        from frontload.filters.decontam import DecontaminationFilter, build_eval_indexes
        from frontload.filters.dedup import DedupPlanner, DropListFilter, ProblemGroups, RowTagger
        from frontload.filters.scores import PassRateCounter, PassRateScorer, QualityScorer, VerifyScorer
        from frontload.filters.stepcheck import StepScorer
        from frontload.filters.threshold import ThresholdFilter

        try:
            done = Manifest.read(self.out_dir, kind="corpus")
            if done.fingerprint == self.fingerprint:
                return done
        except ManifestError:
            pass
        cfg, w = self.config, self.work
        # Eval files are read before any work, so a bad one fails fast; the manifest goes first so a
        # crash can never leave an old manifest over new, partial outputs.
        indexes = build_eval_indexes(list(cfg.decontaminate), cfg.ngram, cfg.question_field)
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        if (w / "logs").exists() and not (w / "scored").exists():
            shutil.rmtree(w)  # finished once, then its manifest went missing: start over, not half-skipped
        for stale in ("data", "rejects", "run"):
            # Outputs of an earlier, different run would corrupt the account; work of this run is kept.
            if (self.out_dir / stale).exists() and not (w / "logs").exists():
                shutil.rmtree(self.out_dir / stale)
        w.mkdir(parents=True, exist_ok=True)
        run = RunFolder(self.out_dir / "run", stage="filters", config=as_dict(cfg), extra={"input": str(self.in_dir)})
        stats: list[tuple[str, dict | None]] = []

        # 1. score
        scorers = [
            self._input_reader(),
            RowTagger(),
            VerifyScorer(mode=cfg.verify_mode, workers=cfg.verify_workers),
            QualityScorer(tokenizer=cfg.tokenizer),
            StepScorer(),
            PassRateCounter(str(w / "pass_counts")),
            self._writer(w / "scored"),
        ]
        stats.append(("score", self._exec("1_score", scorers, self.tasks)))

        # 2. select: pass rate, band, rule, decontamination
        select: list = [self._reader(w / "scored"), PassRateScorer(str(w / "pass_counts"))]
        if cfg.pass_rate_band is not None:
            lo, hi = cfg.pass_rate_band
            select.append(
                ThresholdFilter(
                    f"{lo} <= pass_rate_v1 <= {hi}", self._rejects("pass_rate_band", "band"), prefix="pass_rate_band"
                )
            )
        if cfg.rule:
            select.append(ThresholdFilter(cfg.rule, self._rejects("threshold", "threshold")))
        if indexes:
            select.append(
                DecontaminationFilter(
                    indexes, tuple(cfg.decontaminate_fields), self._rejects("decontaminate", "decontaminate")
                )
            )
        select.append(self._writer(w / "selected"))
        stats.append(("select", self._exec("2_select", select, self.tasks)))

        # 3-5. problem dedup, best of problem, exact traces
        exact, near = "exact" in cfg.dedup, "minhash" in cfg.dedup
        on_problem, on_trace = "problem" in cfg.dedup_on, "trace" in cfg.dedup_on
        groups = [self._reader(w / "selected"), ProblemGroups(str(w), exact=exact and on_problem)]
        if near and on_problem:
            groups.append(self._writer(w / "problems"))
        stats.append(("problem groups", self._exec("3_problem_groups", groups, 1)))
        removed = None
        if near and on_problem and _count_lines(w / "problems"):
            removed = w / "minhash_problem_removed"
            exclusion = JsonlWriter(str(removed), output_filename="${rank}.jsonl", compression=None)
            stats.append(
                ("minhash problems (groups)", self._minhash("minhash_problem", w / "problems", None, exclusion, None))
            )
        planner = DedupPlanner(
            str(w), keep=cfg.keep, exact_trace=exact and on_trace, minhash_removed=str(removed) if removed else None
        )
        stats.append(("dedup plan", self._exec("4_plan", [self._reader(w / "selected"), planner], 1)))
        final_dir = self.out_dir / "data"
        apply_out = w / "deduped" if near and on_trace else final_dir
        apply = [
            self._reader(w / "selected"),
            DropListFilter(str(w / "drops.json"), self._rejects("dedup", "dedup")),
            self._writer(apply_out),
        ]
        stats.append(("dedup", self._exec("5_apply", apply, self.tasks)))

        # 6. near-duplicate traces
        if near and on_trace and _count_lines(apply_out):
            exclusion = self._rejects("minhash_trace", "dedup:minhash_trace")
            stats.append(("minhash traces", self._minhash("minhash_trace", apply_out, "trace", exclusion, final_dir)))

        final_dir.mkdir(parents=True, exist_ok=True)  # present even when nothing was kept
        manifest = self._account(stats, run)
        run.close()
        for tmp in ("scored", "selected", "deduped", "problems"):
            shutil.rmtree(w / tmp, ignore_errors=True)
        return manifest

    def _account(self, stats: list[tuple[str, dict | None]], run) -> Manifest:
        for step, data in stats:
            for entry in data or []:
                _log_step(run, step, entry)
        account = Account(inputs=_count_lines(self.work / "scored"), kept=_count_lines(self.out_dir / "data"))
        unreadable = _reject_counts(self.out_dir / "rejects" / READ_STEP)
        account.inputs += sum(unreadable.values())  # lines of the input that never became records
        for reason, n in sorted(_reject_counts(self.out_dir / "rejects").items()):
            account.drop(reason, n)
        if not account.balanced:
            raise ManifestError(f"{self.out_dir}: records unaccounted for: {account.to_dict()}")
        require_records(account, self.out_dir, self.out_dir / "rejects", self.allow_empty)
        manifest = Manifest(
            kind="corpus",
            fingerprint=self.fingerprint,
            config=as_dict(self.config),
            counts={"documents": account.kept},
            account=account,
            extra={
                "stage": "filters",
                "input": str(self.in_dir),
                "input_fingerprint": self._input_fingerprint(),
                "data": "data",
                "rejects": "rejects",
            },
        )
        manifest.write(self.out_dir)
        return manifest


def _log_step(run, stage: str, entry: dict[str, Any]) -> None:
    """One ``stats`` event from a datatrove step's stats: inputs, kept and dropped by reason."""
    name = entry.get("name", "?")
    raw = entry.get("stats", {})
    values = {k: (v.get("total", v) if isinstance(v, dict) else v) for k, v in raw.items()}
    if "total" not in values:
        return
    dropped = {k.removeprefix("dropped_"): int(v) for k, v in values.items() if k.startswith("dropped_")}
    if values.get("dropped") and not dropped:
        dropped = {"dropped": int(values["dropped"])}
    inputs = int(values["total"])
    kept = int(values.get("forwarded", inputs - sum(dropped.values())))
    extra = {
        k: v for k, v in values.items() if k not in ("total", "forwarded", "dropped") and not k.startswith("dropped_")
    }
    run.log("stats", step_name=f"{stage}: {name}", inputs=inputs, kept=kept, dropped=dropped, counts=extra)


def run_filters(
    in_dir: str | Path,
    out_dir: str | Path,
    config: FilterConfig | None = None,
    *,
    tasks: int = 1,
    workers: int = 1,
    allow_empty: bool = False,
    executor: str = "local",
) -> Manifest:
    """Filter a traces folder into a corpus folder with rejects and a balanced drop account (restartable).

    A run that keeps no record is an error carrying the drop account, unless ``allow_empty``. The
    datatrove stages run on ``executor`` (local, slurm or ray); the accounting reads the shared folder.
    """
    cfg = config or FilterConfig()
    run = cfg.build(in_dir, out_dir, tasks=tasks, workers=workers, allow_empty=allow_empty, executor=executor)
    return run.run()
