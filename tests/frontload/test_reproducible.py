"""Reproducible by content: the same study built in two different workspace folders gives the same
fingerprint for every step, the same corpus bytes, shard sets, tokenizer and mix plans."""

import hashlib
import shutil
from pathlib import Path

from frontload.core.manifest import Manifest
from frontload.corpus.mix_plan import MixPlan
from frontload.corpus.tokenizer import load_tokenizer
from frontload.runner import build_plan, print_mix_plans
from frontload.study_file import load_study

TINY = Path(__file__).with_name("tiny_study.toml")
DATA_KINDS = ("task", "corpus", "tokenizer", "shards")


def _build(root: Path) -> dict:
    """Build the tiny study's data steps and mix plans under ``root``; return what identifies each step."""
    study_file = root / "study.toml"
    study_file.parent.mkdir(parents=True)
    shutil.copyfile(TINY, study_file)
    study = load_study(study_file)
    study.study.workspace = str(root / "workspace")
    print_mix_plans(study, out=root / "plans.json")  # builds every data step, then plans each arm's mix
    plan = build_plan(study)
    seen = {}
    for step in plan.ordered():
        seen[f"{step.id} planned"] = step.fingerprint  # training and eval steps included
        if step.kind not in DATA_KINDS:
            continue
        assert step.done(), step.id
        rel = step.output.relative_to(plan.ws).as_posix()
        if step.kind == "tokenizer":
            seen[f"{step.id} content"] = load_tokenizer(step.output).fingerprint
        elif step.kind != "task":
            m = Manifest.read(step.output)
            if step.kind == "shards":  # analysis joins a shard set to the corpus it was made from
                corpus = Manifest.read(plan[f"corpus:{step.id.split(':')[1]}"].output)
                assert m.extra["input_fingerprint"] == corpus.fingerprint
            seen[f"{step.id} manifest"] = (rel, m.fingerprint, m.extra.get("input_fingerprint"), m.account.to_dict())
        if step.kind in ("corpus", "task"):
            for f in sorted(step.output.rglob("*")):
                if f.is_file() and "data" in f.relative_to(step.output).parts or f.name.startswith("task."):
                    seen[f"{step.id} {f.relative_to(step.output)}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    for arm in study.arms:
        for phase in ("pretrain", "sft"):
            mix = MixPlan.read(plan.ws / "mix" / arm.name / phase / "plan.json")
            seen[f"mix {arm.name}/{phase}"] = (mix.fingerprint, {p: v.fingerprint for p, v in mix.phases.items()})
    return seen


def test_two_workspaces_of_one_study_give_identical_fingerprints(tmp_path):
    first = _build(tmp_path / "a")
    second = _build(tmp_path / "elsewhere" / "b")
    assert first.keys() == second.keys()
    assert {k for k in first if k.endswith(".jsonl") or ".jsonl" in k}  # corpus bytes are compared
    differ = {k: (first[k], second[k]) for k in first if first[k] != second[k]}
    assert differ == {}


def test_the_web_corpus_does_not_read_this_repository_s_readme():
    from frontload.corpus.packaged_text import packaged_texts

    origins = {origin for origin, _ in packaged_texts(("package_descriptions",))}
    assert origins and "package:frontload" not in origins


def test_a_change_in_how_packaged_text_is_picked_gives_the_web_corpus_a_new_fingerprint(tmp_path, monkeypatch):
    from frontload import runner
    from frontload.corpus import packaged_text

    study_file = tmp_path / "study.toml"
    shutil.copyfile(TINY, study_file)
    study = load_study(study_file)
    study.study.workspace = str(tmp_path / "workspace")
    before = {s.id: s.fingerprint for s in build_plan(study).ordered()}
    monkeypatch.setattr(packaged_text, "CONTENT_VERSION", packaged_text.CONTENT_VERSION + 1)
    runner._environment_fingerprint.cache_clear()
    after = {s.id: s.fingerprint for s in build_plan(study).ordered()}
    runner._environment_fingerprint.cache_clear()
    # Same version and packages, other texts: a workspace built before must not be reused for the web corpus.
    assert after["corpus:web"] != before["corpus:web"] and after["tokenizer"] != before["tokenizer"]
    assert after["corpus:reasoning"] == before["corpus:reasoning"]
