"""The small files of a workspace, read into table rows: study.json, run configs, manifests, mix plans, checkpoints.

:func:`scan` walks the workspace once and finds every file the store reads; :func:`small_tables`
turns the small ones into rows (re-read on every ingest; cheap). Where a file does not say which arm
or phase it belongs to, its place in the workspace layout (:mod:`frontload.core.workspace`) does.
Errors (unreadable JSON, unknown schema versions) are collected with the file they name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontload.analysis.schema import Table
from frontload.core.workspace import STUDY_FILE, parse_mix_plan, parse_run
from frontload.core.workspace import data_name as _data_name

KNOWN_FILE_VERSIONS = (1,)
KNOWN_PLAN_VERSIONS = (1,)
# Folders that never hold anything the store reads (documents, weights' tokenizer copies, reports).
_PRUNE = {"data", "rejects", "tokenizer", "__pycache__", "report", "node_modules"}
_POLARS_TYPES = {"VARCHAR": "String", "JSON": "String", "BIGINT": "Int64", "INTEGER": "Int64", "DOUBLE": "Float64"}


@dataclass
class Scan:
    study: Path | None = None
    runs: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    manifests: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    plans: list[tuple[Path, Path | None]] = field(default_factory=list)  # (plan, run folder)
    metas: list[tuple[Path, Path | None]] = field(default_factory=list)  # (meta.json, run folder)
    events: list[tuple[Path, Path]] = field(default_factory=list)  # (file, run folder)


class Paths:
    """Turns the paths stages wrote (absolute, relative to the cwd, or to the workspace) into workspace-relative ones."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        prefixes = {str(ws.absolute()), str(ws.resolve())}
        if not Path(str(ws)).is_absolute():
            prefixes.add(os.path.normpath(str(ws)))
        self.prefixes = sorted((p.rstrip("/") + "/" for p in prefixes if p not in (".", "")), key=len, reverse=True)

    def rel(self, p: Path) -> str:
        return p.relative_to(self.ws).as_posix()

    def norm(self, value: Any) -> str | None:
        if value is None:
            return None
        s = re.sub(r"^(\./)+", "", str(value)).rstrip("/")
        for prefix in self.prefixes:
            if s.startswith(prefix):
                return s[len(prefix) :]
        return s

    def norm_sql(self, col: str) -> str:
        """The same as :meth:`norm`, as a SQL expression over ``col`` (longest prefix first)."""
        x = f"regexp_replace(regexp_replace({col}, '^(\\./)+', ''), '/+$', '')"
        whens = " ".join(
            f"WHEN starts_with({x}, '{p.replace(chr(39), chr(39) * 2)}') THEN substr({x}, {len(p) + 1})"
            for p in self.prefixes
        )
        return f"(CASE {whens} ELSE {x} END)" if whens else x


def _read_json(path: Path, errors: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        errors.append(f"{path}: not readable JSON ({e})")
        return None
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a JSON object")
        return None
    return data


def _check_version(path: Path, data: dict[str, Any], errors: list[str], required: bool) -> bool:
    version = data.get("schema_version")
    if version is None and not required:
        return True
    if version not in KNOWN_FILE_VERSIONS:
        errors.append(f"{path}: unknown schema_version {version!r} (this frontload reads {list(KNOWN_FILE_VERSIONS)})")
        return False
    return True


def scan(ws: Path, errors: list[str]) -> Scan:
    found = Scan()
    if (ws / STUDY_FILE).is_file():
        found.study = ws / STUDY_FILE
    run_dirs: list[Path] = []
    for root, dirs, files in os.walk(ws):
        here = Path(root)
        while run_dirs and run_dirs[-1] not in here.parents and run_dirs[-1] != here:
            run_dirs.pop()
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _PRUNE and d != "events")
        if "meta.json" in files and here.parent.name == "checkpoints":
            found.metas.append((here / "meta.json", run_dirs[-1] if run_dirs else None))
            dirs[:] = []  # weights and optimizer state below
            continue
        if "config.json" in files:
            info = _read_json(here / "config.json", errors)
            # Only run folders count: an exported Hugging Face model also has a config.json.
            if info is not None and "run_id" in info and "stage" in info:
                if _check_version(here / "config.json", info, errors, required=True):
                    found.runs.append((here, info))
                run_dirs.append(here)
        if "manifest.json" in files:
            manifest = _read_json(here / "manifest.json", errors)
            if (
                manifest is not None
                and manifest.get("kind") in ("corpus", "shards")
                and _check_version(here / "manifest.json", manifest, errors, required=True)
            ):
                found.manifests.append((here, manifest))
        for name in ("plan.json", "mix_plan.json"):
            if name in files:
                found.plans.append((here / name, run_dirs[-1] if run_dirs and run_dirs[-1] == here else None))
        if (here / "events").is_dir():
            owner = run_dirs[-1] if run_dirs and run_dirs[-1] == here else here
            for name in sorted(os.listdir(here / "events")):
                if name.endswith(".jsonl"):
                    found.events.append((here / "events" / name, owner))
    return found


def insert_rows(con, table: Table, rows: list[dict[str, Any]]) -> None:
    import polars as pl

    if not rows:
        return
    schema = {c.name: getattr(pl, _POLARS_TYPES.get(c.type, "Boolean")) for c in table.columns}
    for c in table.columns:
        if c.type == "JSON":
            for r in rows:
                if r.get(c.name) is not None:
                    r[c.name] = json.dumps(r[c.name], ensure_ascii=False, default=str)
    frame = pl.DataFrame([{c.name: r.get(c.name) for c in table.columns} for r in rows], schema=schema, orient="row")
    con.register("_frontload_rows", frame.to_arrow())
    try:
        con.execute(f"INSERT INTO {table.name} SELECT * FROM _frontload_rows")
    finally:
        con.unregister("_frontload_rows")


def _as_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _study_rows(scan: Scan, errors: list[str]) -> tuple[list[dict], list[dict]]:
    study = _read_json(scan.study, errors) if scan.study else None
    arm_names: list[str] = []
    arm_cfgs: dict[str, dict] = {}
    if study is not None:
        _check_version(scan.study, study, errors, required=False)
        for i, arm in enumerate(study.get("arms") or []):
            if not isinstance(arm, dict) or not arm.get("name"):
                errors.append(f"{scan.study}: arms[{i}] has no name")
                continue
            arm_names.append(str(arm["name"]))
            arm_cfgs[str(arm["name"])] = arm
    # Arms that only run folders name (no study.json, or a run outside the study) still get a row.
    for _, info in sorted(scan.runs, key=lambda r: str(r[0])):
        arm = info.get("arm")
        if arm and arm not in arm_names:
            arm_names.append(str(arm))
    inner = (study or {}).get("study") if isinstance((study or {}).get("study"), dict) else {}
    baseline = (study or {}).get("baseline") or inner.get("baseline") or (arm_names[0] if arm_names else None)
    if baseline is not None and arm_names and baseline not in arm_names:
        errors.append(f"{scan.study}: baseline {baseline!r} is not an arm ({', '.join(arm_names)})")
    study_rows = []
    if study is not None or arm_names:
        study_rows = [{"name": (study or {}).get("name") or inner.get("name"), "baseline": baseline, "config": study}]
    arms = [
        {
            "arm": name,
            "arm_order": i,
            "is_baseline": name == baseline,
            "pretrain": arm_cfgs.get(name, {}).get("pretrain"),
            "sft": arm_cfgs.get(name, {}).get("sft"),
            "rl": arm_cfgs.get(name, {}).get("rl"),
            "config": arm_cfgs.get(name),
            **_sweep(arm_cfgs.get(name), scan.study, errors),
        }
        for i, name in enumerate(arm_names)
    ]
    return study_rows, arms


def _sweep(arm: dict | None, where: Path | None, errors: list[str]) -> dict[str, Any]:
    """An arm's place in a sweep: study.json's arm entry ``sweep = {"template": ARM, "axes": {axis: value}}``
    (as the runner writes it; ``name`` is accepted for ``template``)."""
    sweep = (arm or {}).get("sweep")
    if sweep is None:
        return {"sweep": None, "sweep_axes": None}
    name = sweep.get("template") or sweep.get("name") if isinstance(sweep, dict) else None
    if not name or not isinstance(sweep.get("axes"), dict):
        errors.append(f'{where}: arm {arm.get("name")!r}: sweep must be {{"template": ..., "axes": {{axis: value}}}}')
        return {"sweep": None, "sweep_axes": None}
    return {"sweep": str(name), "sweep_axes": sweep["axes"]}


def study_bootstrap(scan: Scan) -> tuple[int | None, int | None]:
    """study.json's ``analysis = {resamples, bootstrap_seed}`` table, as (resamples, seed); None where unset."""
    study = _read_json(scan.study, []) if scan.study else None
    table = (study or {}).get("analysis") if isinstance((study or {}).get("analysis"), dict) else {}
    return _as_int(table.get("resamples")), _as_int(table.get("bootstrap_seed"))


def study_seed(scan: Scan, errors: list[str]) -> int:
    """The seed of runs that do not name one: study.json's ``study.seed`` (or top-level ``seed``), else 0."""
    study = _read_json(scan.study, errors) if scan.study else None
    inner = (study or {}).get("study")
    seed = (inner.get("seed") if isinstance(inner, dict) else None) or (study or {}).get("seed")
    return _as_int(seed) or 0


def _plan_rows(plan: dict[str, Any], rel: str, arm: str | None, phase: str | None, own_phase_only: bool) -> list[dict]:
    """Rows of one mix plan: ``MixPlan.to_dict()`` (phases -> stages -> sources) or a flat ``stages`` list."""
    if isinstance(plan.get("phases"), dict):
        phases = plan["phases"]
        if own_phase_only and phase in phases:
            # A training run's mix_plan.json holds the whole schedule; the run stands for its own phase.
            phases = {phase: phases[phase]}
        flat = [
            (name, p.get("fingerprint"), p.get("stages") or [], p.get("sources") or {}) for name, p in phases.items()
        ]
    else:
        flat = [(phase, plan.get("fingerprint"), plan.get("stages") or [], {})]
    rows = []
    for phase_name, phase_fp, stages, shard_infos in flat:
        for s, stage in enumerate(stages):
            sources = stage.get("sources") or []
            # MixPlan writes {name: SourcePlan}; a flat plan may write [{name, ...}].
            items = sources.items() if isinstance(sources, dict) else ((src.get("name"), src) for src in sources)
            for name, src in items:
                info = shard_infos.get(name) or {}
                rows.append(
                    {
                        "plan_fingerprint": phase_fp,
                        "mix_fingerprint": plan.get("fingerprint"),
                        "arm": arm,
                        "phase": phase_name,
                        "path": rel,
                        "stage_index": _as_int(stage.get("index", s)),
                        "budget": stage.get("budget", {k: stage[k] for k in ("samples", "tokens") if k in stage}),
                        "source": name,
                        "tokens": _as_int(src.get("tokens")),
                        "samples": _as_int(src.get("samples")),
                        "share": _as_float(src.get("share")),
                        "epochs": _as_float(src.get("epochs")),
                        "shards_fingerprint": info.get("fingerprint") or src.get("fingerprint"),
                        "source_info": src,
                        "plan": plan,
                    }
                )
    return rows


def small_tables(ws: Path, paths: Paths, scan: Scan, errors: list[str]) -> dict[str, list[dict]]:
    """Rows of every small-file table (study, arms, runs, checkpoints, corpora, shards, mix_plan)."""
    tables: dict[str, list[dict]] = {}
    tables["study"], tables["arms"] = _study_rows(scan, errors)
    tables["runs"], run_by_dir = _run_rows(paths, scan, study_seed(scan, errors))
    tables["checkpoints"] = _checkpoint_rows(paths, scan, run_by_dir, errors)
    _inherit_seeds(tables["runs"], tables["checkpoints"])
    tables["corpora"], tables["shards"] = _manifest_rows(paths, scan)
    tables["mix_plan"] = _mix_plan_rows(ws, paths, scan, run_by_dir, errors)
    return tables


def _inherit_seeds(runs: list[dict], ckpts: list[dict]) -> None:
    # A run that names no seed but starts from (or evaluates) a checkpoint takes that checkpoint's run's seed.
    explicit = {r["run_id"]: r["seed"] for r in runs if _as_int(r["info"].get("seed")) is not None}
    seed_of_ckpt = {c["path"]: explicit[c["run_id"]] for c in ckpts if c["run_id"] in explicit}
    for r in runs:
        if r["run_id"] not in explicit and r["parent"] in seed_of_ckpt:
            r["seed"] = seed_of_ckpt[r["parent"]]


def _run_rows(paths: Paths, scan: Scan, default_seed: int) -> tuple[list[dict], dict[Path, dict]]:
    """One row per run id, and every run folder's row (checkpoints and plans name their run by folder)."""
    runs, run_by_dir = [], {}
    for folder, info in scan.runs:
        rel = paths.rel(folder)
        # The workspace layout names the arm where a stage's config does not.
        placed = parse_run(rel)
        path_arm = placed.arm if placed else None
        row = {
            "run_id": info["run_id"],
            "stage": info.get("stage"),
            "arm": info.get("arm") or path_arm,
            "phase": info.get("phase"),
            # The runner writes the study seed of a run at the top of its config.json (RunFolder extra).
            "seed": _as_int(info.get("seed")) if _as_int(info.get("seed")) is not None else default_seed,
            "parent": paths.norm(info.get("parent")),
            "path": rel,
            "created": _as_float(info.get("created")),
            "config": info.get("config"),
            "info": info,
        }
        run_by_dir[folder] = row
        runs.append(row)
    # Several folders with one run id (a resumed run copied elsewhere): keep the newest.
    dedup: dict[str, dict] = {}
    for row in sorted(runs, key=lambda r: (r["created"] or 0.0, r["path"])):
        dedup[row["run_id"]] = row
    return list(dedup.values()), run_by_dir


def _checkpoint_rows(paths: Paths, scan: Scan, run_by_dir: dict[Path, dict], errors: list[str]) -> list[dict]:
    ckpts = []
    for meta_path, run_dir in scan.metas:
        meta = _read_json(meta_path, errors)
        if meta is None or not _check_version(meta_path, meta, errors, required=False):
            continue
        run = run_by_dir.get(run_dir) if run_dir else None
        ckpts.append(
            {
                "path": paths.rel(meta_path.parent),
                "run_id": run["run_id"] if run else None,
                "arm": run["arm"] if run else meta.get("arm"),
                "phase": meta.get("phase") or (run["phase"] if run else None),
                "step": _as_int(meta.get("step")),
                "consumed_samples": _as_int(meta.get("consumed_samples")),
                "mix_plan_fingerprint": meta.get("mix_plan_fingerprint"),
                "parent": paths.norm(meta.get("parent")),
                "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
                "model": meta.get("model"),
                "meta": meta,
            }
        )
    return ckpts


def _manifest_rows(paths: Paths, scan: Scan) -> tuple[list[dict], list[dict]]:
    corpora, shards = [], []
    for folder, m in scan.manifests:
        rel = paths.rel(folder)
        name = _data_name(folder, m.get("fingerprint"))
        counts = m.get("counts") or {}
        if m["kind"] == "corpus":
            account = m.get("account") or {}
            corpora.append(
                {
                    "name": m.get("name") or name,
                    "fingerprint": m.get("fingerprint"),
                    "path": rel,
                    "documents": _as_int(counts.get("documents", account.get("kept"))),
                    "inputs": _as_int(account.get("in")),
                    "kept": _as_int(account.get("kept")),
                    "dropped": account.get("dropped"),
                    "counts": counts,
                    "config": m.get("config"),
                    "manifest": m,
                }
            )
        else:
            shards.append(
                {
                    "name": m.get("name") or name,
                    "fingerprint": m.get("fingerprint"),
                    "path": rel,
                    "input_fingerprint": m.get("input_fingerprint"),
                    "tokenizer_fingerprint": m.get("tokenizer_fingerprint"),
                    "sft": bool(m.get("sft", False)),
                    "documents": _as_int(counts.get("documents")),
                    "tokens": _as_int(counts.get("tokens")),
                    "dtype": None if m.get("dtype") is None else str(m.get("dtype")),
                    "vocab_size": _as_int(m.get("vocab_size")),
                    "manifest": m,
                }
            )
    return corpora, shards


def _mix_plan_rows(ws: Path, paths: Paths, scan: Scan, run_by_dir: dict[Path, dict], errors: list[str]) -> list[dict]:
    plans = []
    for plan_path, run_dir in scan.plans:
        plan = _read_json(plan_path, errors)
        if plan is None or not _check_version(plan_path, plan, errors, required=False):
            continue
        version = plan.get("plan_version")
        if version is not None and version not in KNOWN_PLAN_VERSIONS:
            errors.append(
                f"{plan_path}: unknown plan_version {version!r} (this frontload reads {list(KNOWN_PLAN_VERSIONS)})"
            )
            continue
        run = run_by_dir.get(run_dir) if run_dir else None
        arm = phase = None
        if run is not None:
            arm, phase = run["arm"], run["phase"]
        elif (placed := parse_mix_plan(plan_path.relative_to(ws))) is not None:
            arm, phase = placed
        plans += _plan_rows(
            plan, paths.rel(plan_path), plan.get("arm") or arm, plan.get("phase") or phase, run is not None
        )
    return plans
