"""The named views of the store: the study's questions as SQL over the ingested tables.

Invariants: views only read tables (they hold no data, so a re-ingest never leaves them stale) and
use plain DuckDB SQL, so the file answers the same in the ``duckdb`` CLI, polars and pandas. "Gain"
is always an improvement: ``arm - baseline`` for scores, ``baseline - arm`` for perplexity and loss.
"""

from __future__ import annotations

from frontload.core.phases import PHASES

LOWER_IS_BETTER = ("perplexity", "loss")


def phase_order_sql(col: str) -> str:
    """SQL ranking ``col`` along the checkpoint chain (pretrain 0, sft 1, rl 2, others after)."""
    whens = " ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(PHASES))
    return f"(CASE {col} {whens} ELSE {len(PHASES)} END)"


_LOWER = ", ".join(f"'{m}'" for m in LOWER_IS_BETTER)

VIEW_SQL: dict[str, str] = {
    "ablation": f"""
WITH e AS (
    SELECT ev.* REPLACE (CASE WHEN ev.metric = 'pass@k' AND ev.k IS NOT NULL THEN 'pass@' || ev.k
                              ELSE ev.metric END AS metric),
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
        PARTITION BY arm_name, eval_phase, task, metric
        ORDER BY eval_step DESC NULLS LAST, t DESC NULLS LAST, file_id DESC, seq DESC) = 1
)
SELECT last.arm_name AS arm,
       COALESCE(a.arm_order, 1000000) AS arm_order,
       eval_phase AS phase,
       {phase_order_sql("eval_phase")} AS phase_order,
       task, metric, value,
       eval_step AS step, checkpoint, n_questions, n_samples
FROM last LEFT JOIN arms a ON a.arm = last.arm_name
ORDER BY arm_order, arm, phase_order, phase, task, metric
""",
    "persistence": f"""
WITH base AS (
    SELECT arm FROM arms WHERE is_baseline ORDER BY arm_order LIMIT 1
), g AS (
    SELECT x.arm, x.arm_order, y.arm AS baseline_arm, x.task, x.metric, x.phase, x.phase_order,
           CASE WHEN x.metric IN ({_LOWER}) THEN y.value - x.value ELSE x.value - y.value END AS gain
    FROM ablation x
    JOIN ablation y ON y.arm = (SELECT arm FROM base) AND y.task = x.task AND y.metric = x.metric
                   AND y.phase = x.phase
    WHERE x.arm <> y.arm
)
SELECT arm, baseline_arm, task, metric,
       max(gain) FILTER (WHERE phase = 'pretrain') AS gain_pretrain,
       max(gain) FILTER (WHERE phase = 'sft') AS gain_sft,
       max(gain) FILTER (WHERE phase = 'rl') AS gain_rl,
       (max(gain) FILTER (WHERE phase = 'pretrain') > 0 AND arg_max(gain, phase_order) > 0) AS persists
FROM g
GROUP BY arm, baseline_arm, task, metric
ORDER BY min(arm_order), arm, task, metric
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
    QUALIFY row_number() OVER (PARTITION BY arm, COALESCE(phase, stage) ORDER BY created DESC NULLS LAST, run_id DESC) = 1
), lastck AS (
    SELECT * FROM checkpoints WHERE run_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY step DESC NULLS LAST, path DESC) = 1
), m AS (
    SELECT run_id, count(*) AS n, arg_max(loss, step) FILTER (WHERE loss IS NOT NULL) AS last_loss
    FROM metrics GROUP BY run_id
)
SELECT tr.arm, tr.phase_name, {phase_order_sql("tr.phase_name")}, tr.run_id, tr.path,
       COALESCE(lastck.parent, tr.parent), lastck.path, lastck.step, lastck.consumed_samples,
       lastck.mix_plan_fingerprint, COALESCE(m.n, 0), m.last_loss
FROM tr LEFT JOIN lastck ON lastck.run_id = tr.run_id LEFT JOIN m ON m.run_id = tr.run_id
"""


def create_views(con) -> None:
    """(Re)create every named view on a writable connection."""
    for name, sql in VIEW_SQL.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
