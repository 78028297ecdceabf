"""The experiment file: one TOML file per study, loaded into typed configs.

A study names a workspace, a tokenizer, the corpora and how each is built, a model, per-phase
training settings, the arms (each a pretraining mix schedule, an SFT mix and an RL set) and the
evaluation tasks. Every error names the file, the table and the key; unknown keys are errors.
Stage-specific tables (``[model]``, ``[pretrain]``, ``filters = {...}``, ...) are checked against
the stage's own config class when the study is loaded, so a typo fails before anything runs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frontload.core.config import ConfigError, as_dict, from_mapping
from frontload.core.errors import FrontloadError
from frontload.core.phases import PHASES
from frontload.corpus.mix import MixStage


@dataclass(kw_only=True)
class StudySection:
    """``[study]``: name, workspace folder (relative to the study file's folder unless absolute), seed."""

    name: str
    workspace: str = "runs/study"
    seed: int = 1234
    baseline: str | None = None  # the arm every other arm is compared against; default: the first


@dataclass(kw_only=True)
class TokenizerSection:
    """``[tokenizer]``: a SentencePiece model trained on the named corpora."""

    train_on: list[str]
    vocab_size: int = 4096
    max_documents: int = 200_000  # documents sampled for training; SentencePiece needs no more

    def __post_init__(self) -> None:
        if not self.train_on:
            raise ConfigError("train_on", "name at least one corpus")
        if self.vocab_size < 256:
            raise ConfigError("vocab_size", f"must be at least 256, got {self.vocab_size}")


@dataclass(kw_only=True)
class SourceSection:
    """Where a corpus's records come from."""

    kind: Literal["packaged_text", "files", "hf_dataset", "generators"]
    paths: list[str] = field(default_factory=list)  # files / hf_dataset: local paths
    text_field: str = "text"  # files / hf_dataset: the field holding the document text
    question_field: str | None = None  # files / hf_dataset of problems: question field (makes records problems)
    answer_field: str = "answer"
    solution_field: str | None = None
    families: list[str] = field(default_factory=list)  # generators: built-in families
    n: int = 0  # generators: number of problems
    difficulty: list[int] = field(default_factory=lambda: [1, 4])  # generators: [low, high]
    style: Literal["concise", "detailed"] = "concise"
    templates: int | None = None  # generators: how many surface forms per family (None = all)
    seed: int | None = None  # generators: defaults to the study seed

    def __post_init__(self) -> None:
        if self.kind in ("files", "hf_dataset") and not self.paths:
            raise ConfigError("paths", f"a {self.kind!r} source needs paths")
        if self.kind == "generators":
            if not self.families:
                raise ConfigError("families", "a generators source needs at least one family")
            if self.n <= 0:
                raise ConfigError("n", f"must be positive, got {self.n}")
        if len(self.difficulty) != 2 or self.difficulty[0] > self.difficulty[1]:
            raise ConfigError("difficulty", f"expected [low, high], got {self.difficulty}")


@dataclass(kw_only=True)
class CorpusSection:
    """``[corpora.NAME]``: a source, an optional teacher generation step and optional filters."""

    source: SourceSection
    generate: dict[str, Any] | None = None  # frontload.synth GenerateConfig fields
    filters: dict[str, Any] | None = None  # frontload.filters FilterConfig fields; decontaminate = true uses [eval]
    max_epochs: float | None = None  # repeat cap: the mix plan errors if this corpus is repeated more often


@dataclass(kw_only=True)
class RLArmSection:
    """An arm's RL: the corpus whose problems (with gold answers) are the prompts."""

    problems: str
    steps: int | None = None  # overrides [rl].steps


@dataclass(kw_only=True)
class ArmSection:
    """``[[arms]]``: one arm of the ablation."""

    name: str
    pretrain: list[MixStage]  # stages in order, each a budget (tokens/samples/epochs) and a blend
    sft: MixStage | None = None  # e.g. { epochs = 2, blend = { reasoning_hq = 1.0 } }
    rl: RLArmSection | None = None

    def __post_init__(self) -> None:
        if not self.pretrain:
            raise ConfigError("pretrain", "an arm needs at least one pretraining stage")
        if self.rl is not None and self.sft is None:
            raise ConfigError("rl", "RL starts from an SFT checkpoint; give the arm an sft table")


@dataclass(kw_only=True)
class EvalTaskSection:
    """A held-out evaluation task: generated from families with a fresh seed, or read from a file."""

    name: str
    families: list[str] = field(default_factory=list)
    n: int = 64
    difficulty: list[int] = field(default_factory=lambda: [1, 3])
    seed: int = 101
    templates: int | None = None  # surface forms per pool, as for a generators corpus (None = all)
    path: str | None = None  # a JSONL/Parquet file instead of generators
    question_field: str = "question"
    answer_field: str = "answer"

    def __post_init__(self) -> None:
        if not self.families and self.path is None:
            raise ConfigError("families", "give families to generate from, or a path")


@dataclass(kw_only=True)
class EvalSection:
    """``[eval]``: tasks and when to run them."""

    tasks: list[EvalTaskSection] = field(default_factory=list)
    after: list[Literal["pretrain", "sft", "rl"]] = field(default_factory=lambda: list(PHASES))
    samples: int = 4  # pass@1 is averaged over this many samples per question
    temperature: float = 0.7  # sampling temperature (0 = greedy, then samples must be 1)
    top_p: float = 1.0
    max_new_tokens: int = 96  # answer budget per completion
    pass_k: list[int] = field(default_factory=list)  # also report pass@k for these k
    batch_size: int = 32  # completions decoded together
    perplexity_on: list[str] = field(default_factory=list)  # corpora whose pretraining shards get a perplexity

    def decoding(self) -> dict[str, Any]:
        """The fields of the evaluator's EvalConfig."""
        return {
            k: getattr(self, k) for k in ("samples", "temperature", "top_p", "max_new_tokens", "pass_k", "batch_size")
        }


@dataclass(kw_only=True)
class Study:
    """A whole study file, loaded and checked."""

    study: StudySection
    tokenizer: TokenizerSection
    corpora: dict[str, CorpusSection]
    model: dict[str, Any]
    arms: list[ArmSection]
    pretrain: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    rl: dict[str, Any] = field(default_factory=dict)
    eval: EvalSection = field(default_factory=EvalSection)
    path: Path | None = None  # the file it came from (not a TOML key)

    @property
    def workspace(self) -> Path:
        ws = Path(self.study.workspace)
        if not ws.is_absolute() and self.path is not None:
            # Relative to where the user runs frontload, like every other path on the command line.
            ws = Path.cwd() / ws
        return ws

    @property
    def baseline(self) -> str:
        return self.study.baseline or self.arms[0].name

    def to_dict(self) -> dict[str, Any]:
        d = as_dict(self)
        d.pop("path")
        return d


def _check_references(study: Study, where: str) -> None:
    names = set(study.corpora)

    def need(name: str, key: str) -> None:
        if name not in names:
            raise ConfigError(key, f"unknown corpus {name!r} (corpora: {', '.join(sorted(names))})")

    for i, name in enumerate(study.tokenizer.train_on):
        need(name, f"{where}[tokenizer].train_on[{i}]")
    arm_names = [a.name for a in study.arms]
    if len(set(arm_names)) != len(arm_names):
        raise ConfigError(f"{where}[[arms]]", f"arm names must be unique, got {arm_names}")
    if study.study.baseline is not None and study.study.baseline not in arm_names:
        raise ConfigError(f"{where}[study].baseline", f"no arm named {study.study.baseline!r}")
    for a, arm in enumerate(study.arms):
        for s, stage in enumerate(arm.pretrain):
            for src in stage.weights:
                need(src, f"{where}[[arms]][{a}] ({arm.name}).pretrain[{s}].blend.{src}")
        if arm.sft:
            for src in arm.sft.weights:
                need(src, f"{where}[[arms]][{a}] ({arm.name}).sft.blend.{src}")
        if arm.rl:
            need(arm.rl.problems, f"{where}[[arms]][{a}] ({arm.name}).rl.problems")
            if study.corpora[arm.rl.problems].source.kind == "packaged_text":
                raise ConfigError(
                    f"{where}[[arms]][{a}] ({arm.name}).rl.problems", "RL needs a corpus of problems with answers"
                )
    task_names = [t.name for t in study.eval.tasks]
    if len(set(task_names)) != len(task_names):
        raise ConfigError(f"{where}[eval].tasks", f"task names must be unique, got {task_names}")


def load_study(path: str | Path) -> Study:
    """Read and check a study file; errors name the file, the table and the key."""
    path = Path(path)
    if not path.exists():
        raise FrontloadError(f"{path}: no such study file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise FrontloadError(f"{path}: not valid TOML: {e}") from e
    where = f"{path}: "
    tables = {k: v for k, v in data.items()}
    corpora = tables.pop("corpora", None)
    if not isinstance(corpora, dict) or not corpora:
        raise ConfigError(f"{where}[corpora]", "a study needs at least one [corpora.NAME] table")
    parsed_corpora = {name: from_mapping(CorpusSection, t, f"{where}[corpora.{name}]") for name, t in corpora.items()}
    arms = tables.pop("arms", None)
    if not isinstance(arms, list) or not arms:
        raise ConfigError(f"{where}[[arms]]", "a study needs at least one [[arms]] table")
    parsed_arms = [from_mapping(ArmSection, t, f"{where}[[arms]][{i}]") for i, t in enumerate(arms)]
    known = {"study", "tokenizer", "model", "pretrain", "sft", "rl", "eval"}
    for key in tables:
        if key not in known:
            raise ConfigError(
                f"{where}[{key}]", f"unknown table (known: {', '.join(sorted(known | {'corpora', 'arms'}))})"
            )
    for key in ("study", "tokenizer", "model"):
        if key not in tables:
            raise ConfigError(f"{where}[{key}]", "required table is missing")
    study = Study(
        study=from_mapping(StudySection, tables["study"], f"{where}[study]"),
        tokenizer=from_mapping(TokenizerSection, tables["tokenizer"], f"{where}[tokenizer]"),
        corpora=parsed_corpora,
        model=dict(tables["model"]),
        arms=parsed_arms,
        pretrain=dict(tables.get("pretrain", {})),
        sft=dict(tables.get("sft", {})),
        rl=dict(tables.get("rl", {})),
        eval=from_mapping(EvalSection, tables.get("eval", {}), f"{where}[eval]"),
        path=path,
    )
    _check_references(study, where)
    _check_stage_tables(study, where)
    return study


def model_config(study: Study, vocab_size: int | None = None):
    """The ``[model]`` table as the trainer's ModelConfig (vocab size from the tokenizer)."""
    from frontload.train.model import ModelConfig

    table = {**study.model, "vocab_size": vocab_size or study.tokenizer.vocab_size}
    return from_mapping(ModelConfig, table, f"{study.path}: [model]")


# Fields of the phase configs that the runner sets itself; a study file may not.
RUNNER_FIELDS = frozenset(
    {"run_dir", "shards", "mix", "plan", "tokenizer", "arm", "init_from", "seed", "model", "prompts", "progress"}
)


def phase_config(study: Study, phase: str, **managed: Any):
    """``[pretrain]``/``[sft]``/``[rl]`` merged with what the runner sets, as the phase's config class."""
    if phase == "pretrain":
        from frontload.train.pretrain import PretrainConfig as cls
    elif phase == "sft":
        from frontload.train.sft import SFTConfig as cls
    else:
        from frontload.train.rl import RLConfig as cls
    table = getattr(study, phase)
    where = f"{study.path}: [{phase}]"
    for key in table:
        if key in RUNNER_FIELDS:
            raise ConfigError(f"{where}.{key}", "is set by the study runner; remove it from the study file")
    return from_mapping(cls, {**table, **managed}, where)


def _check_stage_tables(study: Study, where: str) -> None:
    # Stage tables are checked by the stages' own config classes, so a typo fails before any work.
    model = model_config(study)
    phase_config(study, "pretrain", run_dir="-", plan="-", model=model)
    phase_config(study, "sft", run_dir="-", plan="-", init_from="-")
    phase_config(study, "rl", run_dir="-", init_from="-", prompts="-")
    from frontload.train.evaluate import EvalConfig

    from_mapping(EvalConfig, study.eval.decoding(), f"{where}[eval]")
