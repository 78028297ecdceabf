"""A fake-but-realistic study workspace: 3 arms x 2 seeds x 3 phases written with the shared writers.

Everything is written the way the stages write it (``RunFolder`` events with the seed at the top of
config.json, ``Manifest`` files, checkpoint ``meta.json`` with absolute parent paths, mix ``plan.json``),
so the analysis tests exercise the real contracts. ``SCORES`` holds the final pass@1 of every arm,
phase and task (the same for both seeds); :func:`question_values` gives every question's score behind
it, so tests compute the expected gains and intervals from them by hand. ``NLL_GAIN`` sets the
answer_nll effect of each arm and task after each phase so that each verdict occurs once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from frontload.core.events import RunFolder
from frontload.core.fingerprint import atomic_write_json, fingerprint
from frontload.core.manifest import Account, Manifest
from frontload.core.phases import PHASES

ARMS = ("baseline", "front_loaded", "front_loaded_more")

TASKS = ("heldout_arithmetic", "heldout_word_problems")
TOKENIZER_FP = "tok0123456789abc"
# Final pass@1 per (arm, phase, task).
SCORES = {
    ("baseline", "pretrain", "heldout_arithmetic"): 0.10,
    ("baseline", "pretrain", "heldout_word_problems"): 0.05,
    ("baseline", "sft", "heldout_arithmetic"): 0.30,
    ("baseline", "sft", "heldout_word_problems"): 0.20,
    ("baseline", "rl", "heldout_arithmetic"): 0.45,
    ("baseline", "rl", "heldout_word_problems"): 0.30,
    ("front_loaded", "pretrain", "heldout_arithmetic"): 0.18,
    ("front_loaded", "pretrain", "heldout_word_problems"): 0.09,
    ("front_loaded", "sft", "heldout_arithmetic"): 0.38,
    ("front_loaded", "sft", "heldout_word_problems"): 0.26,
    ("front_loaded", "rl", "heldout_arithmetic"): 0.55,
    ("front_loaded", "rl", "heldout_word_problems"): 0.29,
    ("front_loaded_more", "pretrain", "heldout_arithmetic"): 0.22,
    ("front_loaded_more", "pretrain", "heldout_word_problems"): 0.12,
    ("front_loaded_more", "sft", "heldout_arithmetic"): 0.41,
    ("front_loaded_more", "sft", "heldout_word_problems"): 0.27,
    ("front_loaded_more", "rl", "heldout_arithmetic"): 0.60,
    ("front_loaded_more", "rl", "heldout_word_problems"): 0.36,
}
SEEDS = (1, 2)
N_QUESTIONS = 50
# answer_nll improvement (baseline - arm) after pretrain, SFT and RL; each verdict once.
NLL_GAIN = {
    ("front_loaded", "heldout_arithmetic"): (0.3, 0.3, 0.3),  # persists
    ("front_loaded", "heldout_word_problems"): (0.3, 0.0, 0.0),  # washed_out
    ("front_loaded_more", "heldout_arithmetic"): (0.0, 0.3, 0.3),  # emerges
    ("front_loaded_more", "heldout_word_problems"): (0.0, 0.0, -0.3),  # hurts
}
# Perplexity after pretraining (lower is better).
PERPLEXITY = {"baseline": 12.0, "front_loaded": 11.5, "front_loaded_more": 12.5}
REASONING_SHARE = {"baseline": 0.0, "front_loaded": 0.2, "front_loaded_more": 0.4}
PRETRAIN_TOKENS = (600_000, 400_000)  # two pretraining stages
SFT_TOKENS = 100_000
STEPS = {"pretrain": 200, "sft": 60, "rl": 30}
SEQ_LEN = 64


def question_values(arm: str, seed: int, phase: str, task: str, metric: str) -> dict[str, float]:
    """Each question's score at an arm's final checkpoint of ``phase`` (its mean is the evals value).

    pass@1 (2 samples per question): the arm gets ``round(100 * score)`` samples right, filling the
    questions in one order per seed and task, so a better arm is right on a superset of the questions.
    answer_nll: a per-question base (shared by the arms) minus the arm's NLL_GAIN, plus a little noise
    where the gain is not zero.
    """
    order = np.random.default_rng([seed, TASKS.index(task)]).permutation(N_QUESTIONS)
    if metric == "pass@1":
        right = round(100 * SCORES[(arm, phase, task)])
        values = [1.0 if i < right // 2 else 0.5 if i == right // 2 and right % 2 else 0.0 for i in range(N_QUESTIONS)]
        return {f"q{order[i]}": values[i] for i in range(N_QUESTIONS)}
    gain = NLL_GAIN.get((arm, task), (0.0, 0.0, 0.0))[PHASES.index(phase)]
    out = {}
    for q in range(N_QUESTIONS):
        base = 2.0 + 0.5 * math.sin(q + 3 * seed) - 0.2 * PHASES.index(phase)
        noise = 0.02 * math.sin(7 * q + seed + len(arm)) if gain else 0.0
        out[f"q{q}"] = base - gain + noise
    return out


def _manifest(folder: Path, kind: str, fp: str, config: dict, counts: dict, account=None, extra=None) -> None:
    Manifest(kind=kind, fingerprint=fp, config=config, counts=counts, account=account, extra=extra or {}).write(folder)


def _write_corpora(ws: Path) -> dict[str, dict[str, str]]:
    out = {}
    for name, n in (("web", 5000), ("reasoning_diverse", 30000), ("reasoning_hq", 3000), ("rl_problems", 2000)):
        cfg = {"source": {"kind": "generators" if name != "web" else "packaged_text", "n": n}}
        cfp = fingerprint(name, cfg)
        folder = ws / "corpora" / name / cfp
        folder.mkdir(parents=True)
        dup = n // 10
        account = Account(inputs=n, kept=n - dup - 7, dropped={"dedup_exact": dup, "verify_wrong": 7})
        _manifest(folder, "corpus", cfp, cfg, {"documents": n - dup - 7}, account)
        # The filter pipeline's own run folder, with its per-step account.
        with RunFolder(folder / "run", stage="filters", config={"corpus": name}) as run:
            run.log("stats", step_name="verify", inputs=n, kept=n - 7, dropped={"verify_wrong": 7})
            run.log("stats", step_name="dedup", inputs=n - 7, kept=n - 7 - dup, dropped={"dedup_exact": dup})
        sfp = fingerprint(cfp, TOKENIZER_FP)
        sfolder = ws / "shards" / (f"{name}-sft" if name == "reasoning_hq" else name) / sfp
        sfolder.mkdir(parents=True)
        _manifest(
            sfolder,
            "shards",
            sfp,
            {"seq_len": SEQ_LEN},
            {"documents": n - dup - 7, "tokens": (n - dup - 7) * 100},
            extra={
                "tokenizer_fingerprint": TOKENIZER_FP,
                "dtype": "uint16",
                "prefixes": ["00000"],
                "files": {"00000.bin": {"sha256": "0" * 64, "bytes": 1}},
                "input_fingerprint": cfp,
                "sft": name == "reasoning_hq",
                "eod_id": 2,
                "vocab_size": 4096,
            },
        )
        out[name] = {"corpus": cfp, "shards": sfp}
    return out


def _plan(phase: str, stages: list[dict[str, float]], budgets: list[int], shard_fps: dict[str, str]) -> dict:
    """A plan shaped like ``MixPlan.to_dict()`` (frontload.corpus.mix) holding one phase."""
    plan_stages, start = [], 0
    for i, (blend, budget) in enumerate(zip(stages, budgets)):
        sources = {}
        for name, share in blend.items():
            if share <= 0:
                continue
            samples = int(budget * share) // SEQ_LEN
            sources[name] = {
                "weight": share,
                "samples": samples,
                "tokens": samples * SEQ_LEN,
                "share": share,
                "epochs": samples * SEQ_LEN / 1e6,
                "cumulative_epochs": samples * SEQ_LEN / 1e6,
                "stream_offset": [0],
                "prefix_samples": [samples],
            }
        n = sum(src["samples"] for src in sources.values())
        plan_stages.append(
            {"index": i, "start_sample": start, "samples": n, "tokens": n * SEQ_LEN, "sources": sources}
        )
        start += n
    names = sorted({name for st in plan_stages for name in st["sources"]})
    infos = {
        name: {
            "name": name,
            "fingerprint": shard_fps[name],
            "tokenizer_fingerprint": TOKENIZER_FP,
            "sft": phase == "sft",
        }
        for name in names
    }
    phase_fp = fingerprint("mix-phase", phase, plan_stages)
    return {
        "plan_version": 1,
        "fingerprint": fingerprint("mix-plan", phase_fp),
        "seq_len": SEQ_LEN,
        "seed": 1234,
        "tokenizer_fingerprint": TOKENIZER_FP,
        "phases": {
            phase: {
                "phase": phase,
                "seed": 7,
                "seq_len": SEQ_LEN,
                "fingerprint": phase_fp,
                "samples": start,
                "tokens": start * SEQ_LEN,
                "stages": plan_stages,
                "stream_samples": {},
                "sources": infos,
            }
        },
        "schedule": {},
        "warnings": [],
    }


def write_study(ws: Path, arms: tuple[str, ...] = ARMS, seeds: tuple[int, ...] = SEEDS) -> Path:
    """Write a whole fake study into ``ws`` (absolute); returns ``ws``."""
    ws.mkdir(parents=True, exist_ok=True)
    fps = _write_corpora(ws)
    shard_fps = {name: f["shards"] for name, f in fps.items()}
    arm_cfgs = []
    for arm in arms:
        share = REASONING_SHARE[arm]
        pretrain = [{"web": 1.0}, {"web": 1.0 - share, "reasoning_diverse": share}]
        arm_cfgs.append(
            {
                "name": arm,
                "pretrain": [{"tokens": t, "blend": b} for t, b in zip(PRETRAIN_TOKENS, pretrain)],
                "sft": {"blend": {"reasoning_hq": 1.0}, "epochs": 2},
                "rl": {"problems": "rl_problems", "steps": STEPS["rl"], "group": 8},
            }
        )
    atomic_write_json(
        ws / "study.json",
        {"study": {"name": "front-loading-test", "seed": 1234}, "arms": arm_cfgs, "baseline": arms[0], "model": {}},
    )
    for arm in arms:
        for seed in seeds:
            _write_arm(ws, arm, seed, shard_fps)
    return ws


def _write_arm(ws: Path, arm: str, seed: int, shard_fps: dict[str, str]) -> None:
    share = REASONING_SHARE[arm]
    blends = [{"web": 1.0}, {"web": 1.0 - share, "reasoning_diverse": share}]
    plans = {
        "pretrain": _plan("pretrain", blends, list(PRETRAIN_TOKENS), shard_fps),
        "sft": _plan("sft", [{"reasoning_hq": 1.0}], [SFT_TOKENS], shard_fps),
    }
    parent = None
    for phase in PHASES:
        cfg = {"phase": phase, "arm": arm, "lr": 1e-3}
        run_dir = ws / "runs" / arm / phase / fingerprint(arm, phase, seed)
        plan_fp = plans[phase]["phases"][phase]["fingerprint"] if phase in plans else None
        if phase in plans:  # as the trainer does: the run folder keeps the plan it trained on
            atomic_write_json(run_dir / "mix_plan.json", plans[phase])
        with RunFolder(
            run_dir, stage=phase, config=cfg, arm=arm, phase=phase, parent=parent, extra={"seed": seed}
        ) as run:
            steps = STEPS[phase]
            for step in range(1, steps + 1):
                fields = {
                    "phase": phase,
                    "step": step,
                    "loss": 6.0 * math.exp(-step / 80) + 1.0 - share + 0.01 * seed,
                    "lr": 1e-3,
                    "grad_norm": 1.0,
                    "tokens_per_s": 5000.0,
                    "consumed_samples": step * 32,
                    "consumed_by_source": {"web": step * 24, "reasoning_diverse": step * 8},
                }
                if phase == "rl":
                    fields.update(
                        reward_mean=0.2 + step / steps * 0.4 + share / 4,
                        reward_std=0.1,
                        accuracy=0.3,
                        kl=0.01,
                        clip_frac=0.05,
                        zero_variance_groups=1,
                        verifier_errors=0,
                    )
                run.log("metrics", **fields)
                if phase == "rl" and step % 10 == 0:
                    for g in range(2):
                        run.log(
                            "rollouts",
                            step=step,
                            prompt_id=f"p{step}",
                            prompt="What is 2+2?",
                            completion="<think>2+2=4</think> \\boxed{4}",
                            reward=float(g),
                            verdict="correct" if g else "wrong",
                            length=12,
                            finish_reason="stop",
                        )
        ckpts = []
        for step in (STEPS[phase] // 2, STEPS[phase]):
            ck = run_dir / "checkpoints" / f"{step:07d}"
            ck.mkdir(parents=True)
            meta = {
                "phase": phase,
                "step": step,
                "consumed_samples": step * 32,
                "mix_plan_fingerprint": plan_fp,
                "parent": parent,
                "model": {"layers": 2, "hidden": 64},
                "tokenizer_fingerprint": TOKENIZER_FP,
            }
            atomic_write_json(ck / "meta.json", meta)
            ckpts.append(ck)
        # Evaluation of the mid and the final checkpoint, in the arm's eval run folder.
        # Like `frontload train eval --out`: the eval run names its checkpoint, not its arm.
        eval_dir = ws / "runs" / arm / f"eval-{phase}" / fingerprint(arm, phase, "eval", seed)
        eval_cfg = {"checkpoint": str(ckpts[-1]), "samples": 2}
        with RunFolder(
            eval_dir, stage="eval", config=eval_cfg, phase=phase, parent=str(ckpts[-1]), extra={"seed": seed}
        ) as ev:
            for ck, final in ((ckpts[0], False), (ckpts[1], True)):
                at = {"phase": phase, "checkpoint": str(ck), "step": int(ck.name)}
                for task in TASKS:
                    value = SCORES[(arm, phase, task)] if final else SCORES[(arm, phase, task)] / 2
                    # temperature: a field the contract does not name
                    ev.log(
                        "evals",
                        **at,
                        task=task,
                        metric="pass@1",
                        value=value,
                        n_questions=N_QUESTIONS,
                        n_samples=2,
                        temperature=0.7,
                    )
                    pass_k = min(1.0, 1.5 * value)
                    ev.log(
                        "evals",
                        **at,
                        task=task,
                        metric="pass@k",
                        k=2,
                        value=pass_k,
                        n_questions=N_QUESTIONS,
                        n_samples=2,
                    )
                    for metric in ("pass@1", "answer_nll"):
                        values = question_values(arm, seed, phase, task, metric)
                        for qid, v in values.items():
                            # The mid checkpoint scores worse; only the last checkpoint of a phase counts.
                            v = v / 2 if metric == "pass@1" and not final else v + (0.0 if final else 1.0)
                            ev.log("question_scores", **at, task=task, question_id=qid, metric=metric, value=v, n=2)
                        if metric == "answer_nll":
                            ev.log(
                                "evals",
                                **at,
                                task=task,
                                metric=metric,
                                value=sum(values.values()) / len(values) + (0.0 if final else 1.0),
                                n_questions=N_QUESTIONS,
                                n_samples=5 * N_QUESTIONS,
                            )
                    for q in range(3):
                        ev.log(
                            "predictions",
                            **at,
                            task=task,
                            question_id=q,
                            question=f"q{q}",
                            gold="4",
                            sample=0,
                            completion="\\boxed{4}",
                            prediction="4" if q else None,
                            verdict="correct" if q else "unparseable",
                            correct=bool(q),
                        )
                if phase == "pretrain":
                    ev.log(
                        "evals",
                        **at,
                        task="heldout_text",
                        metric="perplexity",
                        value=PERPLEXITY[arm] if final else PERPLEXITY[arm] * 2,
                        n_questions=100,
                        n_samples=1,
                    )
        parent = str(ckpts[-1])


@pytest.fixture
def study_ws(tmp_path) -> Path:
    """A fresh fake study workspace (3 arms x 2 seeds x 3 phases)."""
    return write_study(tmp_path / "ws")
