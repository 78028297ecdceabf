"""The workspace layout: where every output of a study lives, written once.

::

    WORKSPACE/
      study.json                       the resolved study the runner last ran
      tasks/<task>/<fp>/               held-out evaluation task files
      corpora/<corpus>/<fp>/           documents + manifest.json
      tokenizer/<fp>/                  the SentencePiece tokenizer
      shards/<corpus>[-sft]/<fp>/      Megatron .bin/.idx + manifest.json
      runs/<arm>/seed-<s>/<phase>/<fp>/        a training run folder (config.json, events/, checkpoints/)
      runs/<arm>/seed-<s>/eval-<phase>/<fp>/   the evaluation after that phase
      runs/_shared/seed-<s>/pretrain/<fp>/     a pretraining prefix several arms share (they branch from it)
      teachers/<name>/<fp>/                    a study teacher: pretrain/ and sft/ run folders, export/ (Hugging Face)
      mix/<arm>/<phase>/plan.json      mix plans written by ``frontload mix plan``
      frontload.duckdb                 the store (only analysis writes it)
      report/                          tables and plots
      jobs/                            Slurm/Ray job scripts and their logs (``--executor``)

The runner builds paths with :class:`Workspace`; analysis reads arm, seed and phase back from a path
with :func:`parse_run` and :func:`parse_mix_plan`. A new level of run folders is a change to
:data:`RUN_LEVELS` and the two functions that use it, here and nowhere else. ``_shared`` cannot be an
arm's name (arm names start with a letter or digit), so a shared prefix never collides with an arm.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DB_NAME = "frontload.duckdb"
STUDY_FILE = "study.json"
REPORT_DIR = "report"
JOBS_DIR = "jobs"
RUNS_DIR = "runs"
MIX_DIR = "mix"
EVAL_PREFIX = "eval-"  # runs/<arm>/seed-<s>/eval-<phase>/: the evaluation after <phase>
SEED_PREFIX = "seed-"  # runs/<arm>/seed-<s>/: the runs of one training seed
SHARED_DIR = "_shared"  # runs/_shared/seed-<s>/pretrain/<fp>/: a pretraining prefix that arms branch from
# The named levels between runs/ and a run's fingerprint folder, outermost first.
RUN_LEVELS: tuple[str, ...] = ("arm", "seed", "phase")
# Folders of data outputs: <kind folder>/<name>/<fingerprint>/ (the tokenizer has no name level).
DATA_DIRS = {"task": "tasks", "corpus": "corpora", "shards": "shards"}
TOKENIZER_DIR = "tokenizer"
TEACHERS_DIR = "teachers"


@dataclass(frozen=True)
class RunPath:
    """What a run folder's place in the workspace says about it."""

    arm: str | None  # None for a shared pretraining prefix (it belongs to several arms)
    seed: int  # the training seed (model init, data order, sampling)
    phase: str  # the training phase, or the phase an evaluation followed
    evaluation: bool  # an eval-<phase> folder
    fingerprint: str

    @property
    def shared(self) -> bool:
        """A pretraining prefix that several arms branch from."""
        return self.arm is None


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace; every method only computes a path, nothing is created."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def study_file(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def jobs_dir(self) -> Path:
        return self.root / JOBS_DIR

    def task(self, name: str, fp: str) -> Path:
        return self.root / DATA_DIRS["task"] / name / fp

    def corpus(self, name: str, fp: str) -> Path:
        return self.root / DATA_DIRS["corpus"] / name / fp

    def tokenizer(self, fp: str) -> Path:
        return self.root / TOKENIZER_DIR / fp

    def shards(self, name: str, fp: str, *, sft: bool = False) -> Path:
        return self.root / DATA_DIRS["shards"] / (f"{name}-sft" if sft else name) / fp

    def teacher(self, name: str, fp: str) -> Path:
        """The folder of a study teacher: its training run folders and its ``export/``."""
        return self.root / TEACHERS_DIR / name / fp

    def run(self, arm: str, phase: str, fp: str, *, seed: int) -> Path:
        """The run folder of a training phase of an arm, for one seed."""
        return self._run_dir(arm=arm, seed=f"{SEED_PREFIX}{seed}", phase=phase) / fp

    def eval_run(self, arm: str, phase: str, fp: str, *, seed: int) -> Path:
        """The run folder of the evaluation after ``phase``."""
        return self._run_dir(arm=arm, seed=f"{SEED_PREFIX}{seed}", phase=EVAL_PREFIX + phase) / fp

    def shared_run(self, phase: str, fp: str, *, seed: int) -> Path:
        """The run folder of a training prefix that several arms share (pretraining)."""
        return self._run_dir(arm=SHARED_DIR, seed=f"{SEED_PREFIX}{seed}", phase=phase) / fp

    def mix_plan(self, arm: str, phase: str) -> Path:
        return self.root / MIX_DIR / arm / phase / "plan.json"

    def _run_dir(self, **levels: str) -> Path:
        return self.root.joinpath(RUNS_DIR, *(levels[k] for k in RUN_LEVELS))


def _parts(rel: str | os.PathLike) -> tuple[str, ...]:
    return PurePosixPath(Path(rel).as_posix()).parts


def parse_run(rel: str | os.PathLike) -> RunPath | None:
    """Arm, seed and phase of a workspace-relative path at or below a run folder; None elsewhere
    (including a folder of the layout before seeds, ``runs/<arm>/<phase>/<fp>``)."""
    parts = _parts(rel)
    depth = 1 + len(RUN_LEVELS) + 1  # runs/, the levels, the fingerprint
    if len(parts) < depth or parts[0] != RUNS_DIR:
        return None
    levels = dict(zip(RUN_LEVELS, parts[1:], strict=False))
    seed = levels["seed"][len(SEED_PREFIX) :]
    if not levels["seed"].startswith(SEED_PREFIX) or not seed.lstrip("-").isdigit():
        return None
    phase = levels["phase"]
    evaluation = phase.startswith(EVAL_PREFIX)
    return RunPath(
        arm=None if levels["arm"] == SHARED_DIR else levels["arm"],
        seed=int(seed),
        phase=phase[len(EVAL_PREFIX) :] if evaluation else phase,
        evaluation=evaluation,
        fingerprint=parts[depth - 1],
    )


def parse_mix_plan(rel: str | os.PathLike) -> tuple[str, str] | None:
    """(arm, phase) of a workspace-relative ``mix/<arm>/<phase>/plan.json``; None elsewhere."""
    parts = _parts(rel)
    if len(parts) >= 4 and parts[0] == MIX_DIR:
        return parts[1], parts[2]
    return None


def data_name(rel: str | os.PathLike, fp: str | None) -> str:
    """The name of a data output (corpus, shard set, task) from its folder: ``<kind>/<name>/<fp>``.

    A folder outside that layout (a corpus built by hand) is named by itself.
    """
    parts = _parts(rel)
    if fp is not None and len(parts) >= 2 and parts[-1] == fp:
        return parts[-2]
    return parts[-1] if parts else ""


def step_file_name(step_id: str) -> str:
    """A step id (``eval:baseline:sft:s1``) as a file or job name: anything but ``A-Za-z0-9_.-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", step_id)
