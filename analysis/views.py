"""The named views of the store: the study's questions as SQL over the ingested tables.

Invariants: views only read tables (they hold no data, so a re-ingest never leaves them stale) and
use plain DuckDB SQL, so the file answers the same in the ``duckdb`` CLI, polars and pandas. "Gain"
is always an improvement: ``arm - baseline`` for scores, ``baseline - arm`` where lower is better
(:func:`frontload.analysis.stats.direction`). Intervals and verdicts need a bootstrap, which SQL does
badly: the ingest computes them into ``score_intervals`` and ``gain_intervals``, and the views read those.
"""

from __future__ import annotations

from frontload.analysis.stats import LOWER_IS_BETTER, LOWER_IS_BETTER_SUFFIXES, Z_ALPHA, Z_POWER, detectable_ratio
from frontload.core.phases import PHASES


def phase_order_sql(col: str) -> str:
    """SQL ranking ``col`` along the checkpoint chain (pretrain 0, sft 1, rl 2, others after)."""
    whens = " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PHASES))
    return f"(CASE {col} {whens} ELSE {len(PHASES)} END)"


def direction_sql(col: str) -> str:
    """SQL for :func:`frontload.analysis.stats.direction` of the metric in ``col``: 1 or -1."""
    names = ", ".join(f"'{m}'" for m in LOWER_IS_BETTER)
    suffixes = " OR ".join(f"ends_with({col}, '{x}')" for x in LOWER_IS_BETTER_SUFFIXES)
    return f"(CASE WHEN {col} IN ({names}) OR {suffixes} THEN -1 ELSE 1 END)"


def metric_name_sql(metric: str, k: str) -> str:
    """The metric as reported: ``pass@k`` rows are written with their k (``pass@4``)."""
    return f"(CASE WHEN {metric} = 'pass@k' AND {k} IS NOT NULL THEN 'pass@' || {k} ELSE {metric} END)"


def _detectable_rows() -> str:
    """stats.detectable_ratio for 2..100 seeds as SQL rows (seeds, ratio), for the power view; computed when
    the views are made, not at import (every frontload command imports this module)."""
    return ", ".join(f"({n}, {detectable_ratio(n)!r})" for n in range(2, 101))


# Per-question scores of the last evaluated checkpoint of each arm, seed and phase (as scores_by_seed
# picks its evals), read by the ingest to compute the intervals.
QUESTION_SCORES_SQL = f"""
WITH q AS (
    SELECT q.*, {metric_name_sql("q.metric", "q.k")} AS metric_name,
           COALESCE(c.arm, r.arm) AS arm_name,
           COALESCE(q.phase, c.phase) AS eval_phase,
           COALESCE(q.step, c.step) AS eval_step
    FROM question_scores q
    LEFT JOIN checkpoints c ON c.path = q.checkpoint
    LEFT JOIN runs r ON r.run_id = q.run_id
), evaluation AS (
    -- one evaluation = one checkpoint scored in one file; a later re-evaluation replaces an earlier one
    SELECT * FROM (
        SELECT arm_name, seed, eval_phase, task, metric_name, file_id, checkpoint,
               max(eval_step) AS last_step, max(t) AS last_t
        FROM q WHERE arm_name IS NOT NULL AND eval_phase IS NOT NULL
        GROUP BY arm_name, seed, eval_phase, task, metric_name, file_id, checkpoint)
    QUALIFY row_number() OVER (
        PARTITION BY arm_name, seed, eval_phase, task, metric_name
        ORDER BY last_step DESC NULLS LAST, last_t DESC NULLS LAST, file_id DESC) = 1
)
SELECT q.arm_name AS arm, q.seed, q.eval_phase AS phase, q.task, q.metric_name AS metric, q.question_id,
       avg(q.value) AS value
FROM q JOIN evaluation e
  ON e.arm_name = q.arm_name AND e.seed IS NOT DISTINCT FROM q.seed AND e.eval_phase = q.eval_phase
 AND e.task = q.task AND e.metric_name = q.metric_name AND e.file_id = q.file_id
 AND e.checkpoint IS NOT DISTINCT FROM q.checkpoint
WHERE q.value IS NOT NULL
GROUP BY q.arm_name, q.seed, q.eval_phase, q.task, q.metric_name, q.question_id
"""

VIEW_SQL: dict[str, str] = {
    "scores_by_seed": f"""
WITH e AS (
    SELECT ev.* REPLACE ({metric_name_sql("ev.metric", "ev.k")} AS metric),
           COALESCE(c.arm, r.arm) AS arm_name,
           COALESCE(ev.phase, c.phase) AS eval_phase,
           COALESCE(ev.step, c.step) AS eval_step
    FROM evals ev
    LEFT JOIN checkpoints c ON c.path = ev.checkpoint
    LEFT JOIN runs r ON r.run_id = ev.run_id
), last AS (
    -- the last evaluated checkpoint of each phase; a re-evaluation of it replaces the older score
    SELECT * FROM e
    WHERE arm_name IS NOT NULL AND eval_phase IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY arm_name, seed, eval_phase, task, metric
        ORDER BY eval_step DESC NULLS LAST, t DESC NULLS LAST, file_id DESC, seq DESC) = 1
)
SELECT last.arm_name AS arm,
       COALESCE(a.arm_order, 1000000) AS arm_order,
       seed,
       eval_phase AS phase,
       {phase_order_sql("eval_phase")} AS phase_order,
       task, metric, value,
       eval_step AS step, checkpoint, n_questions, n_samples
FROM last LEFT JOIN arms a ON a.arm = last.arm_name
ORDER BY arm_order, arm, seed, phase_order, phase, task, metric
""",
    "ablation": """
WITH s AS (
    SELECT arm, arm_order, phase, phase_order, task, metric,
           avg(value) AS value, count(DISTINCT seed) AS n_seeds, max(n_questions) AS n_questions,
           max(n_samples) AS n_samples, max(step) AS step, arg_min(checkpoint, seed) AS checkpoint
    FROM scores_by_seed
    GROUP BY arm, arm_order, phase, phase_order, task, metric
)
SELECT s.arm, s.arm_order, s.phase, s.phase_order, s.task, s.metric, s.value,
       i.mean, i.ci_low, i.ci_high,
       s.n_seeds, COALESCE(i.n_questions, s.n_questions) AS n_questions, s.n_samples, s.step, s.checkpoint
FROM s LEFT JOIN score_intervals i
  ON i.arm = s.arm AND i.phase = s.phase AND i.task = s.task AND i.metric = s.metric
ORDER BY s.arm_order, s.arm, s.phase_order, s.phase, s.task, s.metric
""",
    "persistence": f"""
WITH base AS (
    SELECT arm FROM arms WHERE is_baseline ORDER BY arm_order LIMIT 1
), g AS (
    SELECT x.arm, x.arm_order, y.arm AS baseline_arm, x.task, x.metric, x.phase, x.phase_order,
           {direction_sql("x.metric")} * (x.value - y.value) AS gain
    FROM ablation x
    JOIN ablation y ON y.arm = (SELECT arm FROM base) AND y.task = x.task AND y.metric = x.metric
                   AND y.phase = x.phase
    WHERE x.arm <> y.arm
)
SELECT g.arm, g.baseline_arm, g.task, g.metric, g.phase, g.phase_order,
       -- the paired gain (identical questions and seeds) is the centre of its interval; the
       -- difference of the two arms' scores stands in where no per-question scores were logged
       COALESCE(i.gain, g.gain) AS gain, i.ci_low, i.ci_high, i.n_seeds, i.n_questions,
       max(i.verdict) OVER (PARTITION BY g.arm, g.task, g.metric) AS verdict
FROM g LEFT JOIN gain_intervals i
  ON i.arm = g.arm AND i.phase = g.phase AND i.task = g.task AND i.metric = g.metric
ORDER BY g.arm_order, g.arm, g.task, g.metric, g.phase_order, g.phase
""",
    "power": f"""
SELECT i.arm, i.task, i.metric, i.phase, {phase_order_sql("i.phase")} AS phase_order, i.n_seeds, i.n_questions,
       i.gain, i.se, (i.ci_high - i.ci_low) / 2 AS half_width,
       -- gains that do not vary at all (both arms scored 0 on every question: a metric on the floor) say
       -- nothing about what could be detected
       CASE WHEN i.se > 0 THEN coalesce(m.k, {1 + Z_POWER / Z_ALPHA!r}) * (i.ci_high - i.ci_low) / 2 END
           AS min_detectable_gain
FROM gain_intervals i LEFT JOIN arms a ON a.arm = i.arm
-- stats.detectable_ratio per seed count; beyond 100 seeds the normal quantiles are within 1%
LEFT JOIN (VALUES {{detectable}}) m(n_seeds, k) ON m.n_seeds = i.n_seeds
ORDER BY a.arm_order, i.arm, i.task, i.metric, phase_order, i.phase
""",
    "sweep": """
WITH ax AS (
    SELECT a.arm, a.arm_order, a.sweep, a.sweep_axes, k.axis
    FROM arms a, unnest(json_keys(a.sweep_axes)) AS k(axis)
    WHERE a.sweep IS NOT NULL
)
SELECT ax.sweep, ax.axis,
       json_extract_string(ax.sweep_axes, '$."' || ax.axis || '"') AS value,
       TRY_CAST(json_extract_string(ax.sweep_axes, '$."' || ax.axis || '"') AS DOUBLE) AS value_num,
       ax.sweep_axes AS axes, p.arm, p.task, p.metric, p.phase, p.phase_order,
       p.gain, p.ci_low, p.ci_high, p.verdict
FROM ax JOIN persistence p ON p.arm = ax.arm
ORDER BY ax.sweep, ax.axis, p.task, p.metric, p.phase_order, value_num NULLS LAST, value, ax.arm_order
""",
    "data_mix": f"""
WITH used AS (
    -- where a phase names its plan (checkpoint meta), only that plan counts; a plan copied into
    -- several files (each run keeps the whole schedule) counts once
    SELECT DISTINCT ON (m.arm, m.phase, m.plan_fingerprint, m.stage_index, m.source) m.* FROM mix_plan m
    WHERE m.plan_fingerprint IN (SELECT mix_plan_fingerprint FROM phases WHERE arm = m.arm AND phase = m.phase)
       OR NOT EXISTS (SELECT 1 FROM phases p
                      WHERE p.arm = m.arm AND p.phase = m.phase AND p.mix_plan_fingerprint IS NOT NULL)
)
SELECT arm, phase, {phase_order_sql("phase")} AS phase_order, source,
       sum(tokens)::BIGINT AS tokens,
       sum(samples)::BIGINT AS samples,
       sum(tokens) / sum(sum(tokens)) OVER (PARTITION BY arm, phase) AS share,
       max(epochs) AS max_epochs
FROM used
GROUP BY arm, phase, source
ORDER BY arm, phase_order, phase, tokens DESC, source
""",
    "filter_drops": """
SELECT f.run_id, r.stage, r.path AS run_path, f.step_name, f.inputs, f.kept, d.reason,
       CAST(json_extract(f.dropped, '$."' || d.reason || '"') AS BIGINT) AS records
FROM filter_stats f
LEFT JOIN runs r ON r.run_id = f.run_id,
     unnest(json_keys(f.dropped)) AS d(reason)
ORDER BY run_path, f.file_id, f.seq, d.reason
""",
    "checkpoint_chain": """
WITH RECURSIVE chain(checkpoint, ancestor, depth) AS (
    SELECT path, path, 0 FROM checkpoints
    UNION ALL
    SELECT chain.checkpoint, c.parent, chain.depth + 1
    FROM chain JOIN checkpoints c ON c.path = chain.ancestor
    WHERE c.parent IS NOT NULL AND chain.depth < 64
)
SELECT checkpoint, ancestor, depth FROM chain
""",
    "lineage": """
WITH plan_sources AS (
    -- one plan may sit in several files (two arms with the same SFT mix); count it once
    SELECT plan_fingerprint, source, max(tokens) AS tokens, any_value(shards_fingerprint) AS shards_fingerprint
    FROM (SELECT plan_fingerprint, path, source, sum(tokens) AS tokens, any_value(shards_fingerprint) AS shards_fingerprint
          FROM mix_plan GROUP BY plan_fingerprint, path, source)
    GROUP BY plan_fingerprint, source
)
SELECT e.file_id AS eval_file_id, e.seq AS eval_seq, e.task, e.metric, e.value, e.checkpoint,
       COALESCE(c0.arm, r0.arm) AS arm,
       ch.ancestor, ch.depth, ca.phase AS ancestor_phase, ca.run_id, r.config AS run_config,
       ca.mix_plan_fingerprint, ps.source, ps.tokens::BIGINT AS source_tokens,
       s.path AS shards_path, co.path AS corpus_path, co.config AS corpus_config
FROM evals e
LEFT JOIN runs r0 ON r0.run_id = e.run_id
LEFT JOIN checkpoints c0 ON c0.path = e.checkpoint
LEFT JOIN checkpoint_chain ch ON ch.checkpoint = e.checkpoint
LEFT JOIN checkpoints ca ON ca.path = ch.ancestor
LEFT JOIN runs r ON r.run_id = ca.run_id
LEFT JOIN plan_sources ps ON ps.plan_fingerprint = ca.mix_plan_fingerprint
-- the plan names the shard set's fingerprint; a plan that does not is matched by name and tokenizer
LEFT JOIN shards s ON (ps.shards_fingerprint IS NOT NULL AND s.fingerprint = ps.shards_fingerprint)
                   OR (ps.shards_fingerprint IS NULL AND s.name = ps.source
                       AND (ca.tokenizer_fingerprint IS NULL OR s.tokenizer_fingerprint IS NULL
                            OR s.tokenizer_fingerprint = ca.tokenizer_fingerprint))
LEFT JOIN corpora co ON co.fingerprint = s.input_fingerprint
""",
}

# `phases` is a table rebuilt from runs, checkpoints and metrics at the end of every ingest.
PHASES_SQL = f"""
INSERT INTO phases
WITH tr AS (
    SELECT *, COALESCE(phase, stage) AS phase_name FROM runs
    WHERE stage IN ('pretrain', 'sft', 'rl') AND arm IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY arm, seed, COALESCE(phase, stage) ORDER BY created DESC NULLS LAST, run_id DESC) = 1
), lastck AS (
    SELECT * FROM checkpoints WHERE run_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY step DESC NULLS LAST, path DESC) = 1
), m AS (
    SELECT run_id, count(*) AS n, arg_max(loss, step) FILTER (WHERE loss IS NOT NULL) AS last_loss
    FROM metrics GROUP BY run_id
)
SELECT tr.arm, tr.seed, tr.phase_name, {phase_order_sql("tr.phase_name")}, tr.run_id, tr.path,
       COALESCE(lastck.parent, tr.parent), lastck.path, lastck.step, lastck.consumed_samples,
       lastck.mix_plan_fingerprint, COALESCE(m.n, 0), m.last_loss
FROM tr LEFT JOIN lastck ON lastck.run_id = tr.run_id LEFT JOIN m ON m.run_id = tr.run_id
"""


def create_views(con) -> None:
    """(Re)create every named view on a writable connection."""
    detectable = _detectable_rows()
    for name, sql in VIEW_SQL.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql.replace('{detectable}', detectable)}")
