"""The documented schema of the DuckDB store: every table, its columns, types and meaning.

This module is the single source of truth: the DDL that :mod:`frontload.analysis.ingest` runs,
``frontload sql --schema`` and ``docs/schema.md`` are all generated from :data:`TABLES` and
:data:`VIEWS` (a test checks the doc is current). Event tables map one-to-one to event kinds of
contract 5 (``events/<kind>.rank<R>.jsonl``); every event row keeps ``file_id``/``seq`` (its file and
line number, unique together) and an ``extra`` JSON object with any fields the schema does not name,
so a stage may log more than the contract without breaking or losing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2  # of the DuckDB store; a store of another version is rebuilt by `ingest --rebuild`


@dataclass(frozen=True)
class Column:
    """One column: name, DuckDB type and a one-line description."""

    name: str
    type: str
    doc: str


@dataclass(frozen=True)
class Table:
    """One table; ``event_kind`` is set for tables filled from event files."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    event_kind: str | None = None

    def ddl(self) -> str:
        cols = [f'"{c.name}" {c.type}' for c in self.columns]
        if self.primary_key:
            cols.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  " + ",\n  ".join(cols) + "\n)"


def _c(name: str, type_: str, doc: str) -> Column:
    return Column(name, type_, doc)


# Columns every event table starts with; the first two come from the ingest, the rest from each line.
EVENT_COMMON = (
    _c("file_id", "INTEGER", "the event file (ingest_files.file_id)"),
    _c("rank", "INTEGER", "the writer's rank (from the file name events/<kind>.rank<R>.jsonl)"),
    _c("seq", "BIGINT", "line number within its file, from the writer"),
    _c("v", "INTEGER", "event schema version (1)"),
    _c("run_id", "VARCHAR", "the run that wrote it (runs.run_id)"),
    _c("t", "DOUBLE", "unix time written"),
)
EXTRA = _c("extra", "JSON", "fields of the event the schema does not name (null if none)")


def _event(name: str, kind: str, doc: str, *cols: Column) -> Table:
    return Table(name, doc, (*EVENT_COMMON, *cols, EXTRA), event_kind=kind)


TABLES: tuple[Table, ...] = (
    Table(
        "study",
        "The study the workspace holds (from WORKSPACE/study.json); one row.",
        (
            _c("name", "VARCHAR", "study name"),
            _c("baseline", "VARCHAR", "the arm others are compared with (study.json `baseline`, else the first arm)"),
            _c("config", "JSON", "the whole resolved study config"),
        ),
    ),
    Table(
        "arms",
        "Arms of the study, in study order (from study.json; else the arms named by run folders).",
        (
            _c("arm", "VARCHAR", "arm name"),
            _c("arm_order", "INTEGER", "position in the study (0 = first)"),
            _c("is_baseline", "BOOLEAN", "true for the baseline arm"),
            _c("pretrain", "JSON", "the arm's pretraining mix schedule as configured"),
            _c("sft", "JSON", "the arm's SFT set-up as configured"),
            _c("rl", "JSON", "the arm's RL set-up as configured"),
            _c("config", "JSON", "the arm's whole config table"),
            _c("sweep", "VARCHAR", "the sweep the arm belongs to (study.json arm `sweep.name`), null if none"),
            _c("sweep_axes", "JSON", "{axis: value} of the arm within its sweep (study.json arm `sweep.axes`)"),
        ),
        primary_key=("arm",),
    ),
    Table(
        "runs",
        "One row per run folder (a `config.json` written by `RunFolder`).",
        (
            _c("run_id", "VARCHAR", "run id (kept across resumes)"),
            _c("stage", "VARCHAR", "tokenizer|problems|traces|filters|shards|mix|pretrain|sft|rl|eval"),
            _c("arm", "VARCHAR", "arm name, or null for data stages"),
            _c("phase", "VARCHAR", "pretrain|sft|rl (null for data stages)"),
            _c(
                "seed", "BIGINT", "the study seed of the run: config.json `seed`, else study.json's study seed, else 0"
            ),
            _c("parent", "VARCHAR", "what the run started from (a parent checkpoint path, as written)"),
            _c("path", "VARCHAR", "run folder, relative to the workspace"),
            _c("created", "DOUBLE", "unix time the run folder was made"),
            _c("config", "JSON", "the stage config that made the run"),
            _c("info", "JSON", "the whole config.json"),
        ),
        primary_key=("run_id",),
    ),
    Table(
        "phases",
        "One row per arm, seed and training phase: which run, which checkpoints, how far it got (rebuilt each ingest).",
        (
            _c("arm", "VARCHAR", "arm name"),
            _c("seed", "BIGINT", "study seed (runs.seed)"),
            _c("phase", "VARCHAR", "pretrain|sft|rl"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl, then others"),
            _c("run_id", "VARCHAR", "the training run of this phase (the newest if several)"),
            _c("run_path", "VARCHAR", "its run folder, relative to the workspace"),
            _c("start_checkpoint", "VARCHAR", "the checkpoint the phase started from (the previous phase's last)"),
            _c("final_checkpoint", "VARCHAR", "the phase's last checkpoint, relative to the workspace"),
            _c("final_step", "BIGINT", "its step"),
            _c("consumed_samples", "BIGINT", "samples consumed at the last checkpoint"),
            _c("mix_plan_fingerprint", "VARCHAR", "mix plan of the phase (mix_plan.plan_fingerprint)"),
            _c("metric_rows", "BIGINT", "metrics events logged by the run"),
            _c("last_loss", "DOUBLE", "loss at the last logged step"),
        ),
        primary_key=("arm", "seed", "phase"),
    ),
    Table(
        "checkpoints",
        "One row per complete checkpoint folder (`checkpoints/<step>/meta.json`).",
        (
            _c("path", "VARCHAR", "checkpoint folder, relative to the workspace"),
            _c("run_id", "VARCHAR", "the run folder it lies in (null if outside one)"),
            _c("arm", "VARCHAR", "arm of that run"),
            _c("phase", "VARCHAR", "phase (meta.json)"),
            _c("step", "BIGINT", "optimizer step"),
            _c("consumed_samples", "BIGINT", "global samples consumed (resume point)"),
            _c("mix_plan_fingerprint", "VARCHAR", "mix plan it trained on"),
            _c(
                "parent", "VARCHAR", "parent checkpoint (relative to the workspace when inside it), null for the first"
            ),
            _c("tokenizer_fingerprint", "VARCHAR", "tokenizer the model uses"),
            _c("model", "JSON", "ModelConfig as a dict"),
            _c("meta", "JSON", "the whole meta.json"),
        ),
        primary_key=("path",),
    ),
    Table(
        "corpora",
        "One row per corpus folder (`manifest.json` of kind corpus), with its drop account.",
        (
            _c("name", "VARCHAR", "corpus name (the folder above the fingerprint)"),
            _c("fingerprint", "VARCHAR", "hash of the corpus inputs and config"),
            _c("path", "VARCHAR", "corpus folder, relative to the workspace"),
            _c("documents", "BIGINT", "documents kept (counts.documents, else account.kept)"),
            _c("inputs", "BIGINT", "records in (account.in)"),
            _c("kept", "BIGINT", "records kept (account.kept)"),
            _c("dropped", "JSON", "{reason: records dropped}"),
            _c("counts", "JSON", "all counts of the manifest"),
            _c("config", "JSON", "the config that made the corpus"),
            _c("manifest", "JSON", "the whole manifest.json"),
        ),
        primary_key=("path",),
    ),
    Table(
        "shards",
        "One row per Megatron shard set (`manifest.json` of kind shards).",
        (
            _c("name", "VARCHAR", "shard set name (the folder above the fingerprint; the mix source name)"),
            _c("fingerprint", "VARCHAR", "hash of the input corpus, tokenizer and config"),
            _c("path", "VARCHAR", "shard folder, relative to the workspace"),
            _c("input_fingerprint", "VARCHAR", "the corpus it was tokenized from (corpora.fingerprint)"),
            _c("tokenizer_fingerprint", "VARCHAR", "tokenizer used"),
            _c("sft", "BOOLEAN", "true for SFT sets with loss masks"),
            _c("documents", "BIGINT", "documents"),
            _c("tokens", "BIGINT", "tokens"),
            _c("dtype", "VARCHAR", "token dtype of the .bin files"),
            _c("vocab_size", "BIGINT", "tokenizer vocabulary size"),
            _c("manifest", "JSON", "the whole manifest.json"),
        ),
        primary_key=("path",),
    ),
    Table(
        "mix_plan",
        "One row per mix plan, phase, stage and source (a run folder's mix_plan.json, or mix/<arm>/<phase>/plan.json).",
        (
            _c("plan_fingerprint", "VARCHAR", "the phase plan's fingerprint (checkpoints.mix_plan_fingerprint)"),
            _c("mix_fingerprint", "VARCHAR", "fingerprint of the whole plan file (all phases of the schedule)"),
            _c("arm", "VARCHAR", "arm (from the run folder holding it, or mix/<arm>/<phase>/)"),
            _c("phase", "VARCHAR", "phase"),
            _c("path", "VARCHAR", "the plan file, relative to the workspace"),
            _c("stage_index", "INTEGER", "stage within the phase (0 = first)"),
            _c("budget", "JSON", "the stage's token or sample budget as planned"),
            _c("source", "VARCHAR", "source name (shards.name)"),
            _c("tokens", "BIGINT", "tokens the stage draws from the source"),
            _c("samples", "BIGINT", "samples the stage draws from the source"),
            _c("share", "DOUBLE", "the source's share of the stage"),
            _c("epochs", "DOUBLE", "passes over the source"),
            _c("shards_fingerprint", "VARCHAR", "the shard set the source was read from (shards.fingerprint)"),
            _c("source_info", "JSON", "the whole source entry of the plan"),
            _c("plan", "JSON", "the whole plan (repeated per row; small)"),
        ),
    ),
    _event(
        "filter_stats",
        "stats",
        "Data-step accounts (`stats` events): records in, kept and dropped by reason.",
        _c("step_name", "VARCHAR", "the pipeline step"),
        _c("inputs", "BIGINT", "records in"),
        _c("kept", "BIGINT", "records kept"),
        _c("dropped", "JSON", "{reason: records}"),
    ),
    _event(
        "metrics",
        "metrics",
        "Training metrics, one row per logged step (`metrics` events); RL adds the reward columns.",
        _c("seed", "BIGINT", "study seed: the event's own `seed`, else its run's (runs.seed)"),
        _c("phase", "VARCHAR", "pretrain|sft|rl"),
        _c("step", "BIGINT", "optimizer step"),
        _c("loss", "DOUBLE", "training loss"),
        _c("lr", "DOUBLE", "learning rate"),
        _c("grad_norm", "DOUBLE", "gradient norm"),
        _c("tokens_per_s", "DOUBLE", "throughput"),
        _c("consumed_samples", "BIGINT", "global samples consumed"),
        _c("consumed_by_source", "JSON", "{source: samples consumed}"),
        _c("reward_mean", "DOUBLE", "RL: mean reward of the step's rollouts"),
        _c("reward_std", "DOUBLE", "RL: reward standard deviation"),
        _c("accuracy", "DOUBLE", "RL: share of rollouts verified correct"),
        _c("kl", "DOUBLE", "RL: KL to the reference policy"),
        _c("clip_frac", "DOUBLE", "RL: share of clipped ratios"),
        _c("zero_variance_groups", "BIGINT", "RL: groups whose rewards were all equal"),
        _c("verifier_errors", "BIGINT", "RL: rollouts the verifier could not judge"),
    ),
    _event(
        "evals",
        "evals",
        "Benchmark scores (`evals` events): one row per checkpoint, task and metric.",
        _c("seed", "BIGINT", "study seed: the event's own `seed`, else its run's (runs.seed)"),
        _c("phase", "VARCHAR", "phase of the evaluated checkpoint"),
        _c(
            "checkpoint",
            "VARCHAR",
            "evaluated checkpoint, relative to the workspace when inside it (checkpoints.path)",
        ),
        _c("step", "BIGINT", "its step"),
        _c("task", "VARCHAR", "benchmark task"),
        _c("metric", "VARCHAR", "pass@1|pass@k|accuracy|answer_nll|solution_nll|perplexity"),
        _c("k", "BIGINT", "k of pass@k (null otherwise)"),
        _c("value", "DOUBLE", "score"),
        _c("n_questions", "BIGINT", "questions scored"),
        _c("n_samples", "BIGINT", "samples per question"),
    ),
    _event(
        "predictions",
        "predictions",
        "Per-question, per-sample predictions behind each eval score (`predictions` events).",
        _c("seed", "BIGINT", "study seed: the event's own `seed`, else its run's (runs.seed)"),
        _c("phase", "VARCHAR", "phase of the evaluated checkpoint"),
        _c("checkpoint", "VARCHAR", "evaluated checkpoint, relative to the workspace when inside it"),
        _c("step", "BIGINT", "its step"),
        _c("task", "VARCHAR", "benchmark task"),
        _c("question_id", "VARCHAR", "question id within the task"),
        _c("question", "VARCHAR", "the prompt"),
        _c("gold", "VARCHAR", "gold answer"),
        _c("sample", "BIGINT", "sample index"),
        _c("completion", "VARCHAR", "model output"),
        _c("prediction", "VARCHAR", "extracted answer"),
        _c("verdict", "VARCHAR", "correct|wrong|unparseable"),
        _c("correct", "BOOLEAN", "verdict = correct"),
    ),
    _event(
        "question_scores",
        "question_scores",
        "Every question metric per question (`question_scores` events): an eval score is their mean over questions.",
        _c("seed", "BIGINT", "study seed: the event's own `seed`, else its run's (runs.seed)"),
        _c("phase", "VARCHAR", "phase of the evaluated checkpoint"),
        _c("checkpoint", "VARCHAR", "evaluated checkpoint, relative to the workspace when inside it"),
        _c("step", "BIGINT", "its step"),
        _c("task", "VARCHAR", "benchmark task"),
        _c("question_id", "VARCHAR", "question id within the task (the pairing key between arms)"),
        _c("metric", "VARCHAR", "accuracy|pass@1|pass@k|answer_nll|solution_nll"),
        _c("k", "BIGINT", "k of pass@k (null otherwise)"),
        _c("value", "DOUBLE", "the question's score: 0/1, share of samples correct, pass@k estimate, or NLL"),
        _c("n", "BIGINT", "samples behind it (sampled metrics) or tokens scored (teacher-forced *_nll)"),
    ),
    _event(
        "rollouts",
        "rollouts",
        "RL rollouts with their rewards (`rollouts` events).",
        _c("seed", "BIGINT", "study seed: the event's own `seed`, else its run's (runs.seed)"),
        _c("step", "BIGINT", "RL step"),
        _c("prompt_id", "VARCHAR", "problem id"),
        _c("prompt", "VARCHAR", "the prompt"),
        _c("completion", "VARCHAR", "the sampled completion"),
        _c("reward", "DOUBLE", "reward"),
        _c("verdict", "VARCHAR", "correct|wrong|unparseable"),
        _c("length", "BIGINT", "completion tokens"),
        _c("finish_reason", "VARCHAR", "stop|length"),
    ),
    Table(
        "score_intervals",
        "Each arm's score after each phase with its 95% interval (hierarchical bootstrap over seeds, then questions, "
        "never narrower than Student's t interval over the seeds); computed at ingest from question_scores.",
        (
            _c("arm", "VARCHAR", "arm"),
            _c("phase", "VARCHAR", "phase"),
            _c("task", "VARCHAR", "task"),
            _c("metric", "VARCHAR", "metric (pass@k with its k)"),
            _c("mean", "DOUBLE", "mean over seeds of the mean over questions"),
            _c("ci_low", "DOUBLE", "lower end of the interval"),
            _c("ci_high", "DOUBLE", "upper end of the interval"),
            _c(
                "se",
                "DOUBLE",
                "standard deviation of the bootstrap means (at least sd of the seed means / sqrt(seeds))",
            ),
            _c("n_seeds", "BIGINT", "seeds evaluated"),
            _c("n_questions", "BIGINT", "questions per seed (the fewest when seeds differ)"),
        ),
        primary_key=("arm", "phase", "task", "metric"),
    ),
    Table(
        "gain_intervals",
        "Paired gain of each arm over the baseline after each phase (same questions, same seed) with its 95% interval "
        "and the verdict across phases; computed at ingest from question_scores.",
        (
            _c("arm", "VARCHAR", "arm"),
            _c("baseline_arm", "VARCHAR", "the arm compared against"),
            _c("phase", "VARCHAR", "phase"),
            _c("task", "VARCHAR", "task"),
            _c("metric", "VARCHAR", "metric (pass@k with its k)"),
            _c(
                "gain",
                "DOUBLE",
                "mean improvement over the baseline (arm - baseline; baseline - arm where lower is better)",
            ),
            _c("ci_low", "DOUBLE", "lower end of the interval"),
            _c("ci_high", "DOUBLE", "upper end of the interval"),
            _c(
                "se",
                "DOUBLE",
                "standard deviation of the bootstrap means (at least sd of the seed gains / sqrt(seeds))",
            ),
            _c("n_seeds", "BIGINT", "seeds both arms were evaluated with"),
            _c("n_questions", "BIGINT", "questions paired per seed (the fewest when seeds differ)"),
            _c(
                "verdict",
                "VARCHAR",
                "persists|washed_out|emerges|hurts|inconclusive (same for every phase of the row's "
                "arm, task and metric)",
            ),
        ),
        primary_key=("arm", "phase", "task", "metric"),
    ),
    Table(
        "ingest_files",
        "Bookkeeping: every event file ingested and how far (makes ingest incremental and idempotent).",
        (
            _c("file_id", "INTEGER", "id used by event rows"),
            _c("path", "VARCHAR", "event file, relative to the workspace"),
            _c("kind", "VARCHAR", "event kind"),
            _c("run_id", "VARCHAR", "run of the folder it lies in"),
            _c("rank", "INTEGER", "writer rank"),
            _c("bytes_ingested", "BIGINT", "bytes ingested: up to and including the last complete line"),
            _c("lines", "BIGINT", "complete lines ingested"),
            _c("rows_added", "BIGINT", "rows added"),
            _c("bad_lines", "BIGINT", "complete lines that were not valid JSON events (skipped, reported)"),
            _c(
                "partial_bytes",
                "BIGINT",
                "bytes after the last newline at the last ingest (a writer mid-line or killed)",
            ),
            _c("ingested_at", "DOUBLE", "unix time of the last ingest that read it"),
        ),
        primary_key=("file_id",),
    ),
    Table(
        "store_info",
        "Bookkeeping: one row naming the store's schema version and workspace.",
        (
            _c("schema_version", "INTEGER", "store schema version"),
            _c("workspace", "VARCHAR", "absolute workspace path at the last ingest"),
            _c("last_ingest", "DOUBLE", "unix time of the last ingest"),
            _c("inputs_fingerprint", "VARCHAR", "fingerprint of what the small files held (unchanged: tables kept)"),
            _c("resamples", "BIGINT", "bootstrap resamples behind score_intervals and gain_intervals"),
            _c("bootstrap_seed", "BIGINT", "the bootstrap's random seed (same seed, same intervals)"),
        ),
    ),
)

TABLE_BY_NAME = {t.name: t for t in TABLES}
EVENT_TABLES = {t.event_kind: t for t in TABLES if t.event_kind}


@dataclass(frozen=True)
class View:
    """A named view: the question it answers and its columns."""

    name: str
    doc: str
    columns: tuple[Column, ...]


VIEWS: tuple[View, ...] = (
    View(
        "scores_by_seed",
        "Arm x seed x phase -> score per task and metric, from the last evaluated checkpoint of each phase.",
        (
            _c("arm", "VARCHAR", "arm"),
            _c("arm_order", "INTEGER", "study order of the arm"),
            _c("seed", "BIGINT", "study seed"),
            _c("phase", "VARCHAR", "phase of the evaluated checkpoint"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl"),
            _c("task", "VARCHAR", "benchmark task"),
            _c("metric", "VARCHAR", "metric (pass@k is written with its k: pass@4)"),
            _c("value", "DOUBLE", "score"),
            _c("step", "BIGINT", "step of the evaluated checkpoint"),
            _c("checkpoint", "VARCHAR", "evaluated checkpoint"),
            _c("n_questions", "BIGINT", "questions"),
            _c("n_samples", "BIGINT", "samples per question (tokens scored for *_nll and perplexity)"),
        ),
    ),
    View(
        "ablation",
        "Arm x phase -> score per task and metric over seeds, with its 95% interval (from score_intervals).",
        (
            _c("arm", "VARCHAR", "arm"),
            _c("arm_order", "INTEGER", "study order of the arm"),
            _c("phase", "VARCHAR", "phase of the evaluated checkpoints"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl"),
            _c("task", "VARCHAR", "benchmark task"),
            _c("metric", "VARCHAR", "metric (pass@k is written with its k: pass@4)"),
            _c("value", "DOUBLE", "score: mean over seeds of each seed's last evaluation"),
            _c("mean", "DOUBLE", "the same from the per-question scores (null where none were logged)"),
            _c("ci_low", "DOUBLE", "lower end of the 95% interval (seeds, then questions)"),
            _c("ci_high", "DOUBLE", "upper end of the 95% interval"),
            _c("n_seeds", "BIGINT", "seeds evaluated"),
            _c("n_questions", "BIGINT", "questions (per seed)"),
            _c("n_samples", "BIGINT", "samples per question (tokens scored for *_nll and perplexity)"),
            _c("step", "BIGINT", "step of the evaluated checkpoint (the largest over seeds)"),
            _c("checkpoint", "VARCHAR", "evaluated checkpoint (the lowest seed's)"),
        ),
    ),
    View(
        "persistence",
        "Each arm's paired gain over the baseline after each phase with its 95% interval, and the verdict: "
        "does the pretraining gain persist through SFT and RL?",
        (
            _c("arm", "VARCHAR", "arm (the baseline itself is left out)"),
            _c("baseline_arm", "VARCHAR", "the arm compared against"),
            _c("task", "VARCHAR", "benchmark task"),
            _c("metric", "VARCHAR", "metric"),
            _c("phase", "VARCHAR", "phase after which the gain is measured"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl"),
            _c(
                "gain",
                "DOUBLE",
                "improvement over the baseline: arm - baseline (baseline - arm for *_nll, perplexity)",
            ),
            _c("ci_low", "DOUBLE", "lower end of the 95% interval (null without per-question scores)"),
            _c("ci_high", "DOUBLE", "upper end of the 95% interval"),
            _c("n_seeds", "BIGINT", "seeds paired"),
            _c("n_questions", "BIGINT", "questions paired per seed"),
            _c(
                "verdict",
                "VARCHAR",
                "persists (interval above 0 after every phase), washed_out (above 0 after the first phase, not after "
                "the last, the last interval below the first gain), emerges (not above 0 after the first, above 0 after the last), hurts (below 0 after the "
                "last), else inconclusive; null without intervals",
            ),
        ),
    ),
    View(
        "power",
        "How small a gain the study can detect: per arm, task, metric and phase, from the gain's bootstrap spread.",
        (
            _c("arm", "VARCHAR", "arm"),
            _c("task", "VARCHAR", "task"),
            _c("metric", "VARCHAR", "metric"),
            _c("phase", "VARCHAR", "phase"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl"),
            _c("n_seeds", "BIGINT", "seeds paired"),
            _c("n_questions", "BIGINT", "questions paired per seed"),
            _c("gain", "DOUBLE", "the measured gain"),
            _c("se", "DOUBLE", "its standard error (as in gain_intervals)"),
            _c("half_width", "DOUBLE", "half the 95% interval's width"),
            _c(
                "min_detectable_gain",
                "DOUBLE",
                "smallest true gain found with 80% power by a two-sided 5% test: half_width x (1 + 0.84 / 1.96) with "
                "one seed, the same ratio of Student's t quantiles on seeds - 1 degrees of freedom with more "
                "(1.34 for five seeds); null when "
                "se = 0 (the paired gains never vary, e.g. both arms score 0 on every question: nothing is detectable)",
            ),
        ),
    ),
    View(
        "sweep",
        "Gain and interval against a sweep's axis values (arms with study.json `sweep = {name, axes}`), per phase.",
        (
            _c("sweep", "VARCHAR", "sweep name"),
            _c("axis", "VARCHAR", "swept key (one row per axis of a two-axis sweep)"),
            _c("value", "VARCHAR", "the arm's value on that axis, as written"),
            _c("value_num", "DOUBLE", "the same as a number (null if it is not one)"),
            _c("axes", "JSON", "every axis value of the arm"),
            _c("arm", "VARCHAR", "arm"),
            _c("task", "VARCHAR", "task"),
            _c("metric", "VARCHAR", "metric"),
            _c("phase", "VARCHAR", "phase"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl"),
            _c("gain", "DOUBLE", "gain over the baseline (persistence.gain)"),
            _c("ci_low", "DOUBLE", "lower end of its 95% interval"),
            _c("ci_high", "DOUBLE", "upper end"),
            _c("verdict", "VARCHAR", "persistence.verdict"),
        ),
    ),
    View(
        "data_mix",
        "Tokens per source per phase per arm, summed over the stages of each phase's mix plan.",
        (
            _c("arm", "VARCHAR", "arm"),
            _c("phase", "VARCHAR", "phase"),
            _c("phase_order", "INTEGER", "0 pretrain, 1 sft, 2 rl"),
            _c("source", "VARCHAR", "source (shard set name)"),
            _c("tokens", "BIGINT", "tokens drawn"),
            _c("samples", "BIGINT", "samples drawn"),
            _c("share", "DOUBLE", "share of the phase's tokens"),
            _c("max_epochs", "DOUBLE", "most passes over the source in any stage"),
        ),
    ),
    View(
        "filter_drops",
        "Where dropped records went: one row per data step (stats events) and drop reason.",
        (
            _c("run_id", "VARCHAR", "the data run"),
            _c("stage", "VARCHAR", "its stage (filters, traces, ...)"),
            _c("run_path", "VARCHAR", "its folder (under corpora/<name>/ for a corpus's pipeline)"),
            _c("step_name", "VARCHAR", "the pipeline step"),
            _c("inputs", "BIGINT", "records into the step"),
            _c("kept", "BIGINT", "records the step kept"),
            _c("reason", "VARCHAR", "drop reason"),
            _c("records", "BIGINT", "records dropped for it"),
        ),
    ),
    View(
        "checkpoint_chain",
        "Every checkpoint with each of its ancestors (depth 0 = itself), following meta.json `parent`.",
        (
            _c("checkpoint", "VARCHAR", "checkpoints.path"),
            _c("ancestor", "VARCHAR", "an ancestor's path (itself at depth 0)"),
            _c("depth", "INTEGER", "generations back"),
        ),
    ),
    View(
        "lineage",
        "Eval row -> checkpoint -> every ancestor phase -> its run config, mix plan, shard sets and corpora.",
        (
            _c("eval_file_id", "INTEGER", "evals.file_id of the eval row"),
            _c("eval_seq", "BIGINT", "evals.seq of the eval row"),
            _c("task", "VARCHAR", "task"),
            _c("metric", "VARCHAR", "metric"),
            _c("value", "DOUBLE", "score"),
            _c("checkpoint", "VARCHAR", "the evaluated checkpoint"),
            _c("arm", "VARCHAR", "arm of the evaluated checkpoint"),
            _c("ancestor", "VARCHAR", "a checkpoint in its chain"),
            _c("depth", "INTEGER", "0 = the evaluated checkpoint"),
            _c("ancestor_phase", "VARCHAR", "phase that produced the ancestor"),
            _c("run_id", "VARCHAR", "the run that wrote the ancestor"),
            _c("run_config", "JSON", "the config of that run"),
            _c("mix_plan_fingerprint", "VARCHAR", "its mix plan"),
            _c("source", "VARCHAR", "a source of that plan"),
            _c("source_tokens", "BIGINT", "tokens drawn from it in that phase"),
            _c("shards_path", "VARCHAR", "the shard set (matched by name and tokenizer)"),
            _c("corpus_path", "VARCHAR", "the corpus the shards came from"),
            _c("corpus_config", "JSON", "the config that made the corpus"),
        ),
    ),
)


def schema_markdown() -> str:
    """The schema as Markdown (docs/schema.md and `frontload sql --schema`)."""
    out = [
        "# The frontload analysis store",
        "",
        "<!-- generated from analysis/schema.py by `frontload sql --schema`; edit there -->",
        "",
        "`frontload analysis ingest WORKSPACE` loads every run folder of a workspace into one DuckDB file,",
        "`WORKSPACE/frontload.duckdb`. Paths are relative to the workspace. JSON columns hold nested data",
        "as written (query them with `->>`, `json_extract`, `unnest(json_keys(...))`).",
        "",
        "## Tables",
        "",
    ]
    for t in TABLES:
        out += [f"### `{t.name}`", "", t.doc, ""]
        if t.event_kind:
            out += [f"Filled from `events/{t.event_kind}.rank<R>.jsonl` files.", ""]
        out += ["| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {c.type} | {c.doc} |" for c in t.columns]
        out.append("")
    out += ["## Views", ""]
    for v in VIEWS:
        out += [f"### `{v.name}`", "", v.doc, "", "| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {c.type} | {c.doc} |" for c in v.columns]
        out.append("")
    return "\n".join(out)
