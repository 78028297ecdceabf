"""The ablation report: the study's tables printed and saved, and its plots as PNG (and one HTML page).

Invariants: everything shown is read through the read-only store (after an incremental ingest), and
computed on polars frames from the named views; plots are made with matplotlib's Agg backend, so the
report runs on a headless machine. Each arm keeps one colour across every plot. Long curves are
averaged into at most ``MAX_POINTS`` buckets per run in SQL, so a report over millions of metric
rows stays fast and its PNGs small.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from frontload.analysis.stats import direction
from frontload.analysis.store import connect, execute_read
from frontload.core.phases import PHASES
from frontload.core.workspace import Workspace

MAX_POINTS = 400

_CURVES_SQL = """
WITH m AS (
    SELECT COALESCE(m.phase, r.phase, r.stage) AS phase, r.arm, m.run_id, m.step, m.{col} AS y{extra}
    FROM metrics m JOIN runs r ON r.run_id = m.run_id
    WHERE m.{col} IS NOT NULL AND r.arm IS NOT NULL AND m.step IS NOT NULL
), b AS (
    SELECT run_id, greatest(1, (max(step) - min(step)) // {points}) AS w FROM m GROUP BY run_id
)
SELECT arm, phase, (step // w) * w AS step, avg(y) AS y{extra_agg}
FROM m JOIN b ON b.run_id = m.run_id
GROUP BY ALL ORDER BY arm, phase, step
"""


@dataclass
class ReportPaths:
    """What a report wrote: table files, plot files and the HTML page, plus the two tables as frames."""

    out_dir: Path
    tables: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None
    ablation: object = None  # polars.DataFrame: ablation pivoted to arm x phase rows, one column per task/metric
    persistence: object = None  # polars.DataFrame: the persistence view (one row per arm, task, metric, phase)


def _frames(workspace: Path) -> dict[str, object]:
    con = connect(workspace)
    try:

        def q(sql: str):
            return execute_read(con, sql)[-1]

        arms = q("SELECT arm, arm_order, is_baseline FROM arms ORDER BY arm_order")
        return {
            "arms": arms,
            "ablation": q("SELECT * FROM ablation"),
            "persistence": q("SELECT * FROM persistence"),
            "power": q("SELECT * FROM power"),
            "sweep": q("SELECT * FROM sweep"),
            "data_mix": q("SELECT * FROM data_mix"),
            "loss": q(_CURVES_SQL.format(col="loss", points=MAX_POINTS, extra="", extra_agg="")),
            "reward": q(
                _CURVES_SQL.format(
                    col="reward_mean", points=MAX_POINTS, extra=", m.reward_std AS s", extra_agg=", avg(s) AS s"
                )
            ),
            "study": q("SELECT name, baseline FROM study"),
        }
    finally:
        con.close()


def ablation_table(ablation):
    """The ablation view pivoted for reading: one row per arm and phase, one column per task/metric."""
    import polars as pl

    if ablation.is_empty():
        return pl.DataFrame({"arm": [], "phase": []}, schema={"arm": pl.String, "phase": pl.String})
    wide = (
        ablation.with_columns(pl.format("{} {}", "task", "metric").alias("score"))
        .pivot(
            on="score", index=["arm", "arm_order", "phase", "phase_order"], values="value", aggregate_function="first"
        )
        .sort("arm_order", "arm", "phase_order", "phase")
        .drop("arm_order", "phase_order")
    )
    scores = sorted(c for c in wide.columns if c not in ("arm", "phase"))
    return wide.select("arm", "phase", *scores)


def _arm_colors(arms: list[str]) -> dict[str, object]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(arms)}


def _ordered_phases(phases) -> list[str]:
    known = [p for p in PHASES if p in phases]
    return known + sorted(p for p in phases if p not in PHASES)


def _plot_loss(frame, colors, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    if frame.is_empty():
        return None
    phases = _ordered_phases(set(frame["phase"].to_list()))
    fig, axes = plt.subplots(1, len(phases), figsize=(4.6 * len(phases), 3.6), squeeze=False)
    for ax, phase in zip(axes[0], phases):
        for arm, color in colors.items():
            part = frame.filter((pl.col("phase") == phase) & (pl.col("arm") == arm))
            if not part.is_empty():
                ax.plot(part["step"], part["y"], color=color, label=arm, linewidth=1.4)
        ax.set_title(f"{phase} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _headline(frame):
    """Rows of the headline metrics: pass@k with k > 1 has a plot of its own (the pass@k curves)."""
    import polars as pl

    return frame.filter(~pl.col("metric").str.contains(r"^pass@([2-9]|\d\d+)$"))


def _panel_grid(n: int, width: float = 4.4, height: float = 3.4):
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    return fig, [axes[k // cols][k % cols] for k in range(n)]


def _arm_offsets(colors) -> dict[str, float]:
    # Arms side by side around each phase tick, so their interval bars do not hide one another.
    n = len(colors)
    return {arm: (i - (n - 1) / 2) * 0.08 for i, arm in enumerate(colors)}


def _plot_scores(ablation, colors, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    ablation = _headline(ablation)
    if ablation.is_empty():
        return None
    panels = ablation.select("task", "metric").unique().sort("task", "metric").rows()
    fig, axes = _panel_grid(len(panels))
    phases = _ordered_phases(set(ablation["phase"].to_list()))
    offsets = _arm_offsets(colors)
    for ax, (task, metric) in zip(axes, panels):
        panel = ablation.filter((pl.col("task") == task) & (pl.col("metric") == metric))
        for arm, color in colors.items():
            part = panel.filter(pl.col("arm") == arm)
            if part.is_empty():
                continue
            part = part.with_columns(pl.col("phase").replace_strict(phases, list(range(len(phases)))).alias("x"))
            part = part.sort("x")
            xs = [x + offsets[arm] for x in part["x"].to_list()]
            ax.plot(xs, part["value"].to_list(), "o-", color=color, label=arm)
            if "ci_low" in part.columns and part["ci_low"].null_count() < part.height:
                has = part.filter(pl.col("ci_low").is_not_null())
                hx = [x + offsets[arm] for x in has["x"].to_list()]
                mean = has["mean"].to_numpy()
                err = [mean - has["ci_low"].to_numpy(), has["ci_high"].to_numpy() - mean]
                ax.errorbar(hx, mean, yerr=err, fmt="none", ecolor=color, elinewidth=1.2, capsize=3)
        ax.set_xticks(range(len(phases)), phases)
        better = "lower is better" if direction(metric) < 0 else "higher is better"
        ax.set_title(f"{task}\n{metric} ({better})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("score after each phase (bars: 95% interval over seeds and questions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_gains(persistence, colors, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    persistence = _headline(persistence)
    if persistence.is_empty():
        return None
    panels = persistence.select("task", "metric").unique().sort("task", "metric").rows()
    fig, axes = _panel_grid(len(panels))
    phases = _ordered_phases(set(persistence["phase"].to_list()))
    for ax, (task, metric) in zip(axes, panels):
        panel = persistence.filter((pl.col("task") == task) & (pl.col("metric") == metric))
        ax.axhline(0.0, color="black", linewidth=0.8)
        for arm, color in colors.items():
            part = panel.filter(pl.col("arm") == arm)
            if part.is_empty():
                continue
            part = part.with_columns(pl.col("phase").replace_strict(phases, list(range(len(phases)))).alias("x"))
            part = part.sort("x")
            verdict = part["verdict"].drop_nulls()
            label = f"{arm}: {verdict[0]}" if len(verdict) else arm
            ax.plot(part["x"].to_list(), part["gain"].to_list(), "o-", color=color, label=label)
            has = part.filter(pl.col("ci_low").is_not_null())
            if not has.is_empty():
                ax.fill_between(
                    has["x"].to_list(), has["ci_low"].to_list(), has["ci_high"].to_list(), color=color, alpha=0.18
                )
        ax.set_xticks(range(len(phases)), phases)
        ax.set_title(f"{task}\n{metric}: gain over baseline", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("gain over the baseline after each phase (band: 95% interval; above 0 = better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_pass_k(ablation, colors, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    curves = ablation.filter(pl.col("metric").str.contains(r"^pass@\d+$")).with_columns(
        pl.col("metric").str.slice(5).cast(pl.Int64).alias("k")
    )
    if curves.is_empty() or curves["k"].max() < 2:
        return None
    tasks = sorted(set(curves["task"].to_list()))
    phases = _ordered_phases(set(curves["phase"].to_list()))
    fig, axes = plt.subplots(
        len(tasks), len(phases), figsize=(4.0 * len(phases), 3.2 * len(tasks)), squeeze=False, sharey="row"
    )
    for r, task in enumerate(tasks):
        for c, phase in enumerate(phases):
            ax = axes[r][c]
            panel = curves.filter((pl.col("task") == task) & (pl.col("phase") == phase))
            for arm, color in colors.items():
                part = panel.filter(pl.col("arm") == arm).sort("k")
                if part.is_empty():
                    continue
                ax.plot(part["k"].to_list(), part["value"].to_list(), "o-", color=color, label=arm, markersize=4)
                has = part.filter(pl.col("ci_low").is_not_null())
                if has.height > 1:
                    ax.fill_between(
                        has["k"].to_list(), has["ci_low"].to_list(), has["ci_high"].to_list(), color=color, alpha=0.15
                    )
            ax.set_xscale("log", base=2)
            ks = sorted(set(panel["k"].to_list()))
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_title(f"{task} after {phase}", fontsize=9)
            ax.set_xlabel("k (samples)")
            ax.grid(alpha=0.3)
        axes[r][0].set_ylabel("pass@k")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("pass@k curves (band: 95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_sweep(sweep, colors, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    sweep = _headline(sweep.filter(pl.col("value_num").is_not_null()))
    if sweep.is_empty():
        return None
    panels = sweep.select("sweep", "axis", "task", "metric").unique().sort("sweep", "axis", "task", "metric").rows()
    fig, axes = _panel_grid(len(panels))
    cmap = plt.get_cmap("Dark2")
    phases = _ordered_phases(set(sweep["phase"].to_list()))
    for ax, (name, axis, task, metric) in zip(axes, panels):
        panel = sweep.filter(
            (pl.col("sweep") == name)
            & (pl.col("axis") == axis)
            & (pl.col("task") == task)
            & (pl.col("metric") == metric)
        )
        ax.axhline(0.0, color="black", linewidth=0.8)
        for i, phase in enumerate(phases):
            part = panel.filter(pl.col("phase") == phase).sort("value_num")
            if part.is_empty():
                continue
            color = cmap(i % 8)
            ax.plot(part["value_num"].to_list(), part["gain"].to_list(), "o-", color=color, label=f"after {phase}")
            has = part.filter(pl.col("ci_low").is_not_null())
            if has.height > 1:
                ax.fill_between(
                    has["value_num"].to_list(),
                    has["ci_low"].to_list(),
                    has["ci_high"].to_list(),
                    color=color,
                    alpha=0.15,
                )
        ax.set_xlabel(axis)
        ax.set_title(f"{name}: {task}\n{metric} gain over baseline", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("gain against the sweep's axis (band: 95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict_lines(persistence, baseline: str | None) -> list[str]:
    """One line per arm, task and metric: the gain and its interval after each phase, then the verdict."""
    if persistence.is_empty():
        return []
    phases = _ordered_phases(set(persistence["phase"].to_list()))
    short = {"pretrain": "PT", "sft": "SFT", "rl": "RL"}
    lines = []
    for (arm, task, metric), group in persistence.group_by(["arm", "task", "metric"], maintain_order=True):
        by_phase = {r["phase"]: r for r in group.iter_rows(named=True)}
        parts = []
        for p in phases:
            r = by_phase.get(p)
            if r is None or r["gain"] is None:
                continue
            ci = "" if r["ci_low"] is None else f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
            parts.append(f"{r['gain']:+.3f}{ci} after {short.get(p, p)}")
        verdict = next((r["verdict"] for r in by_phase.values() if r["verdict"]), "-")
        lines.append(f"{arm} vs {baseline or 'baseline'} on {task} {metric}: {', '.join(parts)} -> {verdict}")
    return lines


def persistence_table(persistence):
    """The persistence view for reading: one row per arm, task and metric, ``gain [low, high]`` per phase."""
    import polars as pl

    if persistence.is_empty():
        return pl.DataFrame(
            {"arm": [], "task": [], "metric": []}, schema={c: pl.String for c in ("arm", "task", "metric")}
        )

    def cell(r) -> str:
        if r["gain"] is None:
            return ""
        if r["ci_low"] is None:
            return f"{r['gain']:+.3f}"
        return f"{r['gain']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"

    frame = persistence.with_columns(
        pl.struct("gain", "ci_low", "ci_high").map_elements(cell, return_dtype=pl.String).alias("cell"),
        pl.col("verdict").fill_null("-"),
    )
    phases = _ordered_phases(set(frame["phase"].to_list()))
    # The view repeats each row's verdict on every phase, so it can sit in the index; pivot keeps the view's order.
    wide = frame.pivot(
        on="phase", index=["arm", "task", "metric", "verdict"], values="cell", aggregate_function="first"
    )
    cells = [p for p in phases if p in wide.columns]
    return wide.with_columns(pl.col(cells).fill_null("")).select("arm", "task", "metric", *cells, "verdict")


def _plot_reward(frame, colors, path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    if frame.is_empty():
        return None
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    for arm, color in colors.items():
        part = frame.filter(pl.col("arm") == arm)
        if part.is_empty():
            continue
        ax.plot(part["step"], part["y"], color=color, label=arm, linewidth=1.4)
        if part["s"].null_count() < part.height:
            std = part["s"].fill_null(0.0)
            ax.fill_between(part["step"], part["y"] - std, part["y"] + std, color=color, alpha=0.12)
    ax.set_title("RL reward per step (mean ± std over rollouts)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_mix(mix, arms: list[str], path: Path) -> Path | None:
    import matplotlib.pyplot as plt
    import polars as pl

    if mix.is_empty():
        return None
    phases = _ordered_phases(set(mix["phase"].to_list()))
    sources = sorted(set(mix["source"].to_list()))
    cmap = plt.get_cmap("Set2")
    fig, axes = plt.subplots(1, len(phases), figsize=(4.6 * len(phases), 3.6), squeeze=False)
    for ax, phase in zip(axes[0], phases):
        part = mix.filter(pl.col("phase") == phase)
        bottom = [0.0] * len(arms)
        for j, source in enumerate(sources):
            tokens = {r["arm"]: r["tokens"] for r in part.filter(pl.col("source") == source).iter_rows(named=True)}
            if not tokens:
                continue
            heights = [(tokens.get(a) or 0) / 1e6 for a in arms]
            ax.bar(arms, heights, bottom=bottom, color=cmap(j % 8), label=source)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_title(f"{phase} data mix")
        ax.set_ylabel("tokens (millions)")
        ax.tick_params(axis="x", labelrotation=20)
    # One legend for all panels, outside them: every source keeps its colour in every phase.
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html_table(df) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.iter_rows():
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_html(path: Path, title: str, tables: dict[str, object], plots: dict[str, Path]) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for name, df in tables.items():
        parts += [f"<h2>{html.escape(name)}</h2>", _html_table(df)]
    for name, p in plots.items():
        data = base64.b64encode(p.read_bytes()).decode()
        parts += [
            f"<h2>{html.escape(name)}</h2>",
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>",
        ]
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def format_table(df) -> str:
    """A frame as a plain text table with every row and column shown."""
    import polars as pl

    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        fmt_str_lengths=60,
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        float_precision=4,
        tbl_width_chars=200,
    ):
        return str(df)


def report(
    workspace: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    html: bool = False,
    ingest_first: bool = True,
    echo: bool = True,
) -> ReportPaths:
    """Ingest what is new, print the ablation and persistence tables, write CSVs, PNGs and optionally HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import polars as pl

    ws = Path(workspace)
    if ingest_first:
        from frontload.analysis.ingest import ingest

        result = ingest(ws, progress=False)
        if echo:
            print(result.summary())
    out = Path(out_dir) if out_dir is not None else Workspace(ws).report_dir
    out.mkdir(parents=True, exist_ok=True)
    f = _frames(ws)
    paths = ReportPaths(out_dir=out)
    paths.ablation = ablation_table(f["ablation"])
    paths.persistence = f["persistence"]
    tables = {
        "ablation": paths.ablation,
        "persistence": paths.persistence,
        "power": f["power"],
        "data_mix": f["data_mix"],
    }
    for name, df in tables.items():
        paths.tables[name] = out / f"{name}.csv"
        df.write_csv(paths.tables[name])
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_rows=-1, tbl_cols=-1):
        md = [f"## {name}\n\n{df}\n" for name, df in tables.items()]
    paths.tables["markdown"] = out / "report.md"
    paths.tables["markdown"].write_text("\n".join(md), encoding="utf-8")

    arms = f["arms"]["arm"].to_list() or sorted(set(f["ablation"]["arm"].to_list()))
    colors = _arm_colors(arms)
    for name, made in (
        ("loss_curves", _plot_loss(f["loss"], colors, out / "loss_curves.png")),
        ("scores_by_phase", _plot_scores(f["ablation"], colors, out / "scores_by_phase.png")),
        ("gains_by_phase", _plot_gains(f["persistence"], colors, out / "gains_by_phase.png")),
        ("pass_at_k", _plot_pass_k(f["ablation"], colors, out / "pass_at_k.png")),
        ("sweep", _plot_sweep(f["sweep"], colors, out / "sweep.png")),
        ("rl_reward", _plot_reward(f["reward"], colors, out / "rl_reward.png")),
        ("data_mix", _plot_mix(f["data_mix"], arms, out / "data_mix.png")),
    ):
        if made is not None:
            paths.plots[name] = made
    title = "frontload report"
    if not f["study"].is_empty() and f["study"]["name"][0]:
        title += f": {f['study']['name'][0]}"
    if html:
        paths.html = _write_html(out / "report.html", title, tables, paths.plots)
    baseline = f["study"]["baseline"][0] if not f["study"].is_empty() else None
    verdicts = verdict_lines(paths.persistence, baseline)
    if verdicts:
        text = paths.tables["markdown"].read_text(encoding="utf-8")
        head = "## verdicts (gain over the baseline, [95% interval], after each phase)\n\n"
        paths.tables["markdown"].write_text(head + "\n".join(f"- {v}" for v in verdicts) + "\n\n" + text)
    if echo:
        if verdicts:
            print("\nverdicts (gain over the baseline after each phase, [95% interval]; improvements are positive)")
            print("\n".join(verdicts))
        print(f"\nablation (score of the last checkpoint of each phase)\n{format_table(paths.ablation)}")
        print(
            f"\npersistence (gain over {baseline or 'the baseline arm'} after each phase, [95% interval]; "
            "gains are improvements: arm - baseline, baseline - arm for *_nll and perplexity)"
        )
        print(format_table(persistence_table(paths.persistence)))
        print(f"\nwrote {len(paths.tables)} tables and {len(paths.plots)} plots to {out}")
        if paths.html:
            print(f"wrote {paths.html}")
    return paths
