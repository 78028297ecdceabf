"""The experiment file: one TOML file per study, loaded into typed configs.

A study names a workspace, a tokenizer, the corpora and how each is built, a model, per-phase
training settings, the arms (each a pretraining mix schedule, an SFT mix and an RL set) and the
evaluation tasks. Every error names the file, the table and the key; unknown keys are errors.
Names (the study, corpora, arms, tasks) follow the kernel's one pattern (``NAME_PATTERN``): they
become folder names and words in job scripts, so ``../x`` or a name holding a newline is refused here.
Stage-specific tables (``[model]``, ``[pretrain]``, ``filters = {...}``, ...) are checked against
the stage's own config class when the study is loaded, so a typo fails before anything runs.
"""

from __future__ import annotations

import copy
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frontload.core.config import ConfigError, Name, as_dict, check_name, from_mapping
from frontload.core.errors import FrontloadError
from frontload.core.phases import PHASES
from frontload.corpus.mix import MixStage


@dataclass(kw_only=True)
class StudySection:
    """``[study]``: name, workspace folder (relative to the study file's folder unless absolute), seeds."""

    name: Name
    workspace: str = "runs/study"
    seed: int = 1234  # the data seed: corpora, tokenizer and tasks are built once with it
    seeds: list[int] | None = None  # training seeds (model init, data order, sampling); default [seed]
    baseline: Name | None = None  # the arm every other arm is compared against; default: the first
    share_prefixes: bool = True  # arms that agree on their first pretraining stages train them once
    threads: int | None = None  # CPU threads per process; a fixed count makes CPU results machine-independent
    jobs: int = 1  # steps run at once on this machine (worker processes); results do not depend on it

    def __post_init__(self) -> None:
        check_workspace(self.workspace, "workspace")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be at least 1, got {self.threads}")
        if self.jobs < 1:
            raise ConfigError("jobs", f"must be at least 1, got {self.jobs}")
        if self.seeds is not None:
            if not self.seeds:
                raise ConfigError("seeds", "name at least one seed (or leave seeds out: one run with seed)")
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError("seeds", f"seeds must be distinct, got {self.seeds}")


def check_workspace(value: str, key: str) -> str:
    """A workspace path (from the study file or ``--workspace``) without control characters."""
    # The workspace path is written into job scripts; quoting covers spaces, not line breaks.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(key, f"{value!r} holds a control character (newline, tab, ...)")
    return value


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

    name: Name
    pretrain: list[MixStage]  # stages in order, each a budget (tokens/samples/epochs) and a blend
    sft: MixStage | None = None  # e.g. { epochs = 2, blend = { reasoning_hq = 1.0 } }
    rl: RLArmSection | None = None
    # Set by [[sweeps]] expansion, never written by hand: {"template": arm, "axes": {axis: value}}.
    sweep: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.pretrain:
            raise ConfigError("pretrain", "an arm needs at least one pretraining stage")
        if self.rl is not None and self.sft is None:
            raise ConfigError("rl", "RL starts from an SFT checkpoint; give the arm an sft table")


_AXIS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # no '@' or '=': they separate axes in arm names
_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


@dataclass(kw_only=True)
class SweepAxis:
    """One axis of a sweep: a key of the template arm's table and the values it takes."""

    key: str  # a path into the arm's table: "pretrain[1].blend.reasoning_diverse", "sft.epochs", "rl.steps"
    values: list[Any]  # numbers, strings or booleans, one arm (or grid row) each

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("values", "give at least one value")
        for i, v in enumerate(self.values):
            if not isinstance(v, int | float | str | bool):
                raise ConfigError(f"values[{i}]", f"expected a number, string or boolean, got {v!r}")
        if len(set(map(repr, self.values))) != len(self.values):
            raise ConfigError("values", f"values must be distinct, got {self.values}")


@dataclass(kw_only=True)
class SweepSection:
    """``[[sweeps]]``: one arm expanded over the values of one or two keys into named arms.

    The arms are named ``<arm>@<axis>=<value>`` (two axes: ``<arm>@<a>=<x>@<b>=<y>``) and follow the
    template in the arm order. The template stays an arm of its own unless ``keep_template = false``.
    """

    arm: str  # the template: an [[arms]] entry
    axes: dict[str, SweepAxis]  # axis name -> key and values; one or two axes
    zip: bool = False  # two axes: vary them together (equal lengths), not over their grid
    keep_template: bool = True  # the template arm itself still runs

    def __post_init__(self) -> None:
        if not 1 <= len(self.axes) <= 2:
            raise ConfigError("axes", f"give one or two axes, got {len(self.axes)}")
        for name in self.axes:
            if not _AXIS_NAME.fullmatch(name):
                raise ConfigError(f"axes.{name}", "an axis name is letters, digits, '_', '.' or '-'")
        lengths = {len(a.values) for a in self.axes.values()}
        if self.zip and len(lengths) > 1:
            raise ConfigError("zip", f"zipped axes need equal numbers of values, got {sorted(lengths)}")

    def points(self) -> list[dict[str, Any]]:
        """Every arm of the sweep as {axis: value}, in order (grid: the last axis varies fastest)."""
        names = list(self.axes)
        columns = [self.axes[n].values for n in names]
        rows = zip(*columns, strict=True) if self.zip else itertools.product(*columns)
        return [dict(zip(names, row, strict=True)) for row in rows]


def _value_name(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value).replace("+", "")  # 1e+16 -> 1e16: '+' is not a name character
    return str(value)


def _key_path(key: str) -> list[str | int]:
    """``pretrain[1].blend.web`` -> ``["pretrain", 1, "blend", "web"]``; a ValueError names the bad part."""
    path: list[str | int] = []
    for part in key.split("."):
        m = _KEY_PART.fullmatch(part)
        if m is None:
            raise ValueError(f"{part!r} is not a key (write names and [index], e.g. pretrain[1].blend.web)")
        path.append(m.group(1))
        path.extend(int(i) for i in re.findall(r"\d+", m.group(2)))
    return path


def _set_key(table: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in an arm's table; every table or list on the way must exist, only the last key may be new."""
    path = _key_path(key)
    node: Any = table
    walked = ""
    for i, part in enumerate(path):
        last = i == len(path) - 1
        here = f"{walked}[{part}]" if isinstance(part, int) else f"{walked}.{part}".lstrip(".")
        if isinstance(part, int):
            if not isinstance(node, list):
                raise ValueError(f"{walked or 'the arm'} is not a list, so {here} does not exist")
            if part >= len(node):
                raise ValueError(f"{here} does not exist: {walked} has {len(node)} entries")
        else:
            if not isinstance(node, dict):
                raise ValueError(f"{walked} is not a table, so {here} does not exist")
            if part not in node and not last:
                raise ValueError(f"{here} does not exist in the template arm")
        if last:
            old = node[part] if isinstance(part, int) or part in node else None
            numeric = isinstance(old, int | float) and not isinstance(old, bool)
            if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{here} is a number ({old!r}) in the template, got {value!r}")
            if isinstance(old, dict | list):
                raise ValueError(f"{here} is a {'table' if isinstance(old, dict) else 'list'}; sweep a key inside it")
            node[part] = value
        else:
            node = node[part]
        walked = here


def expand_sweeps(arms: list[Any], sweeps: Any, where: str) -> list[tuple[dict[str, Any], str, dict | None]]:
    """The ``[[arms]]`` tables with every ``[[sweeps]]`` expanded: (table, where, sweep info) per arm.

    Expansion works on the TOML tables before they are checked, so an expanded arm is checked like
    one written by hand, and its errors name the sweep and the arm it made.
    """
    out: list[tuple[dict[str, Any], str, dict | None]] = [
        (t, f"{where}[[arms]][{i}]", None) for i, t in enumerate(arms)
    ]
    if sweeps is None:
        return out
    if not isinstance(sweeps, list):
        raise ConfigError(f"{where}[[sweeps]]", "write each sweep as a [[sweeps]] table")
    names = [t.get("name") if isinstance(t, dict) else None for t in arms]
    dropped: set[str] = set()
    for s, raw in enumerate(sweeps):
        at = f"{where}[[sweeps]][{s}]"
        sweep = from_mapping(SweepSection, raw, at)
        if sweep.arm not in names:
            known = ", ".join(str(n) for n in names)
            raise ConfigError(f"{at}.arm", f"no [[arms]] entry named {sweep.arm!r} (arms: {known})")
        template = arms[names.index(sweep.arm)]
        made = []
        for point in sweep.points():
            name = sweep.arm + "".join(f"@{axis}={_value_name(v)}" for axis, v in point.items())
            # A sweep's arm names are built to match the one name pattern; a value that breaks it is named here.
            check_name(name, f"{at}.axes")
            table = copy.deepcopy(template)
            table["name"] = name
            for axis, value in point.items():
                try:
                    _set_key(table, sweep.axes[axis].key, value)
                except ValueError as e:
                    raise ConfigError(f"{at}.axes.{axis}.key", f"{sweep.axes[axis].key!r}: {e}") from None
            info = {
                "template": sweep.arm,
                "axes": dict(point),
                "keys": {axis: a.key for axis, a in sweep.axes.items()},
            }
            made.append((table, f"{at} ({name})", info))
        position = max(i for i, (t, _, _) in enumerate(out) if t.get("name") == sweep.arm)
        out[position + 1 : position + 1] = made
        if not sweep.keep_template:
            dropped.add(sweep.arm)
    return [entry for entry in out if entry[2] is not None or entry[0].get("name") not in dropped]


@dataclass(kw_only=True)
class EvalTaskSection:
    """A held-out evaluation task: generated from families with a fresh seed, or read from a file."""

    name: Name
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
    after: list[Literal[*PHASES]] = field(default_factory=lambda: list(PHASES))
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


TEACHER_PREFIX = "teacher:"  # generate = { model = "teacher:NAME" } names a teacher of the study


@dataclass(kw_only=True)
class TeacherSection:
    """``[teachers.NAME]``: a small model trained inside the study on gold traces, exported for vLLM.

    It pretrains briefly on the corpora of its ``pretrain`` stages (whole documents: the chat format,
    the digits, the worked steps), then fine-tunes on the responses of its ``sft`` corpora; a corpus
    with ``generate = { model = "teacher:NAME", ... }`` is then sampled from its export.
    """

    pretrain: list[MixStage]  # stages as in an arm: a budget (tokens/samples/epochs) and a blend of corpora
    sft: MixStage | None = None  # then SFT on these corpora's responses (loss on the answer tokens only)
    model: dict[str, Any] = field(default_factory=dict)  # keys replacing [model]'s (default: the study's model)
    pretrain_settings: dict[str, Any] = field(default_factory=dict)  # keys replacing [pretrain]'s (optim, steps, ...)
    sft_settings: dict[str, Any] = field(default_factory=dict)  # keys replacing [sft]'s
    seed: int | None = None  # model init and data order; default: [study].seed

    def __post_init__(self) -> None:
        if not self.pretrain:
            raise ConfigError("pretrain", "a teacher needs at least one pretraining stage (SFT starts from it)")

    @property
    def corpora(self) -> list[str]:
        """The corpora it is trained on, in first-use order."""
        stages = [*self.pretrain, *([self.sft] if self.sft else [])]
        return list(dict.fromkeys(src for st in stages for src in st.weights))


def teacher_of(corpus: CorpusSection) -> str | None:
    """The teacher a corpus is generated by (``generate.model = "teacher:NAME"``), or None."""
    model = (corpus.generate or {}).get("model")
    if isinstance(model, str) and model.startswith(TEACHER_PREFIX):
        return model[len(TEACHER_PREFIX) :]
    return None


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
    sweeps: list[SweepSection] = field(default_factory=list)  # already expanded into arms
    teachers: dict[str, TeacherSection] = field(default_factory=dict)  # [teachers.NAME]
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

    @property
    def seeds(self) -> list[int]:
        """The training seeds: every arm trains and is evaluated once per seed."""
        return list(self.study.seeds) if self.study.seeds is not None else [self.study.seed]

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


def _check_teachers(study: Study, where: str) -> None:
    """Teacher references resolve, and no teacher depends on itself (directly or via the tokenizer)."""
    names = set(study.corpora)
    for tname, teacher in study.teachers.items():
        stages = [(f"pretrain[{i}]", st) for i, st in enumerate(teacher.pretrain)]
        stages += [("sft", teacher.sft)] if teacher.sft else []
        for key, stage in stages:
            for src in stage.weights:
                if src not in names:
                    raise ConfigError(
                        f"{where}[teachers.{tname}].{key}.blend.{src}",
                        f"unknown corpus {src!r} (corpora: {', '.join(sorted(names))})",
                    )
    for cname, corpus in study.corpora.items():
        tname = teacher_of(corpus)
        if tname is not None and tname not in study.teachers:
            known = ", ".join(sorted(study.teachers)) or "none; add a [teachers.NAME] table"
            raise ConfigError(
                f"{where}[corpora.{cname}].generate.model", f"unknown teacher {tname!r} (teachers: {known})"
            )
    # Every teacher trains with the study tokenizer, so the tokenizer may not read a teacher's output.
    for i, cname in enumerate(study.tokenizer.train_on):
        if (tname := teacher_of(study.corpora[cname])) is not None:
            raise ConfigError(
                f"{where}[tokenizer].train_on[{i}]",
                f"corpus {cname!r} is generated by teacher {tname!r}, which is trained with this tokenizer (a cycle); "
                "train the tokenizer on the gold corpora instead",
            )

    def visit(root: str, tname: str, path: list[str], seen: set[str]) -> None:
        # teacher -> the corpora it trains on -> the teachers that generate them -> ... back to root?
        for cname in study.teachers[tname].corpora:
            upstream = teacher_of(study.corpora[cname])
            if upstream is None:
                continue
            step = [*path, f"corpus {cname!r}", f"teacher {upstream!r}"]
            if upstream == root:
                raise ConfigError(
                    f"{where}[teachers.{root}]", f"is trained on its own output (a cycle: {' <- '.join(step)})"
                )
            if upstream not in seen:
                visit(root, upstream, step, seen | {upstream})

    for tname in study.teachers:
        visit(tname, tname, [f"teacher {tname!r}"], {tname})


def _check_paths(study: Study, where: str) -> None:
    # A missing input would otherwise surface only when its step runs, after hours of earlier steps.
    for name, corpus in study.corpora.items():
        for i, p in enumerate(corpus.source.paths):
            # Relative to where frontload runs, like the workspace; PATH::SPLIT names a split of a dataset.
            if not Path(p).exists() and not Path(p.rpartition("::")[0] or p).exists():
                raise ConfigError(
                    f"{where}[corpora.{name}].source.paths[{i}]",
                    f"{p!r} does not exist (relative paths start where frontload runs)",
                )
    for i, task in enumerate(study.eval.tasks):
        if task.path is not None:
            p = Path(task.path)
            if not p.is_absolute() and study.path is not None:
                p = study.path.parent / p  # task files are relative to the study file (see steps.task_action)
            if not p.exists():
                raise ConfigError(f"{where}[eval].tasks[{i}].path", f"{str(p)!r} does not exist")


def load_study(path: str | Path, *, workspace: str | None = None) -> Study:
    """Read and check a study file; errors name the file, the table and the key.

    ``workspace`` (the ``--workspace`` option) replaces ``[study].workspace`` and is checked like it.
    """
    path = Path(path)
    if not path.exists():
        raise FrontloadError(f"{path}: no such study file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise FrontloadError(f"{path}: not valid TOML: {e}") from e
    return study_from_tables(data, path, workspace=workspace)


def study_from_tables(data: dict[str, Any], path: Path, *, workspace: str | None = None) -> Study:
    """Check the tables of a study file (as read from TOML at ``path``) and load them into a :class:`Study`."""
    where = f"{path}: "
    tables = {k: v for k, v in data.items()}
    corpora = tables.pop("corpora", None)
    if not isinstance(corpora, dict) or not corpora:
        raise ConfigError(f"{where}[corpora]", "a study needs at least one [corpora.NAME] table")
    for name in corpora:
        check_name(name, f"{where}[corpora.{name}]")
    parsed_corpora = {name: from_mapping(CorpusSection, t, f"{where}[corpora.{name}]") for name, t in corpora.items()}
    arms = tables.pop("arms", None)
    if not isinstance(arms, list) or not arms:
        raise ConfigError(f"{where}[[arms]]", "a study needs at least one [[arms]] table")
    sweeps = tables.pop("sweeps", None)
    parsed_arms = []
    for table, at, sweep_info in expand_sweeps(arms, sweeps, where):
        parsed_arms.append(from_mapping(ArmSection, table, at))
        parsed_arms[-1].sweep = sweep_info
    teachers = tables.pop("teachers", {})
    if not isinstance(teachers, dict):
        raise ConfigError(f"{where}[teachers]", "expected [teachers.NAME] tables")
    for name in teachers:
        check_name(name, f"{where}[teachers.{name}]")
    parsed_teachers = {
        name: from_mapping(TeacherSection, t, f"{where}[teachers.{name}]") for name, t in teachers.items()
    }
    known = {"study", "tokenizer", "model", "pretrain", "sft", "rl", "eval", "sweeps", "teachers"}
    for key in tables:
        if key not in known:
            raise ConfigError(
                f"{where}[{key}]",
                f"unknown table (known: {', '.join(sorted(known | {'corpora', 'arms', 'teachers'}))})",
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
        sweeps=[from_mapping(SweepSection, t, f"{where}[[sweeps]][{i}]") for i, t in enumerate(sweeps or [])],
        teachers=parsed_teachers,
        path=path,
    )
    if workspace:
        study.study.workspace = check_workspace(workspace, "--workspace")
    _check_sweep_baseline(study, arms[0].get("name") if isinstance(arms[0], dict) else None, where)
    _check_references(study, where)
    _check_teachers(study, where)
    _check_paths(study, where)
    _check_stage_tables(study, where)
    return study


def _check_sweep_baseline(study: Study, first_arm: Any, where: str) -> None:
    # A dropped template must not silently hand the baseline role to another arm.
    baseline = study.study.baseline or first_arm
    for i, sweep in enumerate(study.sweeps):
        if not sweep.keep_template and sweep.arm == baseline:
            raise ConfigError(
                f"{where}[[sweeps]][{i}].keep_template",
                f"{sweep.arm!r} is the baseline; keep it, or name another arm in [study].baseline",
            )


def model_config(study: Study, vocab_size: int | None = None, *, teacher: str | None = None):
    """The ``[model]`` table (with a teacher's ``model`` keys over it) as the trainer's ModelConfig."""
    from frontload.train.model import ModelConfig

    table, where = study.model, f"{study.path}: [model]"
    if teacher is not None:
        table, where = {**table, **study.teachers[teacher].model}, f"{study.path}: [teachers.{teacher}].model"
    table = {**table, "vocab_size": vocab_size or study.tokenizer.vocab_size}
    return from_mapping(ModelConfig, table, where)


# Fields of the phase configs that the runner sets itself; a study file may not.
RUNNER_FIELDS = frozenset(
    {
        "run_dir",
        "shards",
        "mix",
        "plan",
        "tokenizer",
        "arm",
        "sweep",
        "init_from",
        "resume_from",
        "stop_at",
        "seed",
        "model",
        "prompts",
        "progress",
    }
)


def phase_config(study: Study, phase: str, *, teacher: str | None = None, **managed: Any):
    """``[pretrain]``/``[sft]``/``[rl]`` merged with what the runner sets, as the phase's config class.

    With ``teacher``, the teacher's ``pretrain_settings``/``sft_settings`` keys replace the phase table's.
    """
    if phase == "pretrain":
        from frontload.train.pretrain import PretrainConfig as cls
    elif phase == "sft":
        from frontload.train.sft import SFTConfig as cls
    else:
        from frontload.train.rl import RLConfig as cls
    table = getattr(study, phase)
    where = f"{study.path}: [{phase}]"
    if teacher is not None:
        own = getattr(study.teachers[teacher], f"{phase}_settings")
        for key in own:
            if key in RUNNER_FIELDS:
                raise ConfigError(
                    f"{study.path}: [teachers.{teacher}].{phase}_settings.{key}", "is set by the study runner"
                )
        table = {**table, **own}
        where = f"{study.path}: [teachers.{teacher}] ([{phase}] + {phase}_settings)"
    for key in table:
        if key in RUNNER_FIELDS:
            raise ConfigError(f"{where}.{key}", "is set by the study runner; remove it from the study file")
    return from_mapping(cls, {**table, **managed}, where)


def generate_config(
    corpus: CorpusSection,
    where: str,
    *,
    teacher_model: str | None = None,
    teacher_id: str | None = None,
    seq_len: int | None = None,
):
    """A corpus's ``generate`` table as :class:`frontload.synth.generate.GenerateConfig`.

    For a corpus generated by a study teacher, ``teacher_model`` (its export folder) replaces
    ``teacher:NAME``, ``teacher_id`` (``teacher:NAME@fingerprint``) is the name requests and records
    use, and the context defaults to the teacher's ``seq_len`` (its RoPE table's size).
    """
    from frontload.synth.generate import GenerateConfig

    table = dict(corpus.generate or {})
    if teacher_of(corpus) is not None:
        if "model_id" in table:
            raise ConfigError(f"{where}.generate.model_id", "is set by the study runner for a study teacher")
        table["model"] = teacher_model or table["model"]
        if teacher_id:
            table["model_id"] = teacher_id
        table.setdefault("max_model_len", seq_len)
    return from_mapping(GenerateConfig, table, f"{where}.generate")


def filter_config(corpus: CorpusSection, where: str, task_files: list[str]):
    """A corpus's ``filters`` table as :class:`frontload.filters.pipeline.FilterConfig`.

    ``decontaminate = true`` means every evaluation task of the study: ``task_files`` (``name=path``).
    """
    from frontload.filters.pipeline import FilterConfig

    table = dict(corpus.filters or {})
    if table.get("decontaminate") is True:
        table["decontaminate"] = list(task_files)
    elif table.get("decontaminate") is False:
        table.pop("decontaminate")
    return from_mapping(FilterConfig, table, f"{where}.filters")


def _check_stage_tables(study: Study, where: str) -> None:
    # Stage tables are checked by the stages' own config classes, so a typo fails before any work.
    for name, corpus in study.corpora.items():
        if corpus.generate is not None:
            teacher = teacher_of(corpus)
            seq_len = model_config(study, teacher=teacher).seq_len if teacher else None
            cfg = generate_config(corpus, f"{where}[corpora.{name}]", seq_len=seq_len)
            if seq_len is not None and cfg.max_model_len > seq_len:
                raise ConfigError(
                    f"{where}[corpora.{name}].generate.max_model_len",
                    f"{cfg.max_model_len} exceeds the seq_len {seq_len} of teacher {teacher!r} (its longest context)",
                )
        if corpus.filters is not None:
            # The task files do not exist before the study runs; their check waits for the run.
            filter_config(corpus, f"{where}[corpora.{name}]", task_files=[])
    model = model_config(study)
    phase_config(study, "pretrain", run_dir="-", plan="-", model=model)
    phase_config(study, "sft", run_dir="-", plan="-", init_from="-")
    phase_config(study, "rl", run_dir="-", init_from="-", prompts="-")
    for name in study.teachers:
        phase_config(study, "pretrain", teacher=name, run_dir="-", plan="-", model=model_config(study, teacher=name))
        phase_config(study, "sft", teacher=name, run_dir="-", plan="-", init_from="-")
    from frontload.train.evaluate import EvalConfig

    from_mapping(EvalConfig, study.eval.decoding(), f"{where}[eval]")
