"""A study teacher: trained inside the study on gold traces, exported, and sampled by vLLM into a corpus.

The fast tests check the plan (teacher -> generated corpus -> shards -> the arm that reads it), what
reruns when the teacher changes, and the load-time errors; the ``vllm`` test runs the chain for real.
"""

import json
import re
from pathlib import Path

import pytest

from frontload.core.errors import FrontloadError
from frontload.runner import DONE, build_plan, run_step, run_study
from frontload.study_file import load_study

STUDY = Path(__file__).with_name("teacher_study.toml")


def _study(tmp_path: Path, edit=None):
    text = STUDY.read_text()
    if edit:
        new = edit(text)
        assert new != text, "the edit changed nothing"
        text = new
    path = tmp_path / "study.toml"
    path.write_text(text)
    study = load_study(path)
    study.study.workspace = str(tmp_path / "ws")
    return study


def _mark_all_done(plan) -> None:
    for step in plan.ordered():
        step.output.mkdir(parents=True, exist_ok=True)
        if not step.atomic:
            (step.output / DONE).write_text("x\n")


def test_the_teacher_is_a_step_between_its_gold_shards_and_the_corpus_it_generates(tmp_path):
    plan = build_plan(_study(tmp_path))
    ids = [s.id for s in plan.ordered()]
    for i, step in enumerate(plan.ordered()):
        for dep in step.deps:
            assert ids.index(dep) < i, f"{step.id} runs before its input {dep}"
    teacher = plan["teacher:tutor"]
    assert set(teacher.deps) == {"shards:gold", "shards:gold:sft"}
    assert teacher.resources == "gpu" and not teacher.atomic
    assert teacher.output == tmp_path / "ws" / "teachers" / "tutor" / teacher.fingerprint
    corpus = plan["corpus:problems_for_teacher"]
    assert corpus.deps == ["teacher:tutor"]
    assert ids.index("tokenizer") < ids.index("teacher:tutor") < ids.index("corpus:problems_for_teacher")
    assert ids.index("corpus:problems_for_teacher") < ids.index("pretrain:front_loaded:s7")


def test_dry_run_shows_the_teacher_and_a_rerun_reuses_it(tmp_path, capsys):
    study = _study(tmp_path)
    run_study(study, dry_run=True)
    out = capsys.readouterr().out
    fp = build_plan(study)["teacher:tutor"].fingerprint
    assert re.search(rf"run\s+teacher:tutor\s+teachers/tutor/{fp}", out)
    _mark_all_done(build_plan(study))
    run_study(study, dry_run=True)
    assert re.search(r"reuse\s+teacher:tutor", capsys.readouterr().out)


def test_a_changed_teacher_reruns_itself_and_what_its_corpus_feeds_only(tmp_path):
    first = build_plan(_study(tmp_path))
    _mark_all_done(first)
    plan = build_plan(_study(tmp_path, lambda t: t.replace("optim = { lr = 3e-3 }", "optim = { lr = 1e-3 }")))
    rerun = {s.id for s in plan.ordered() if s.status() != "reuse"}
    assert rerun == {
        "teacher:tutor",
        "corpus:problems_for_teacher",
        "shards:problems_for_teacher",
        "pretrain:front_loaded:s7",
    }
    # The generated corpus is keyed by the teacher's fingerprint, not by the export's path.
    assert plan["corpus:problems_for_teacher"].fingerprint != first["corpus:problems_for_teacher"].fingerprint


def test_slurm_scripts_train_the_teacher_on_a_gpu_node_before_its_corpus(tmp_path):
    from frontload.jobs import write_job_scripts

    study = _study(tmp_path)
    write_job_scripts(study, executor="slurm", submit=False)
    jobs = tmp_path / "ws" / "jobs"
    teacher = (jobs / next(p.name for p in jobs.glob("*.sbatch") if "teacher-tutor" in p.name)).read_text()
    assert "torchrun" in teacher and "--only teacher:tutor" in teacher
    submit = (jobs / "submit.sh").read_text().splitlines()
    corpus_line = next(line for line in submit if "corpus-problems_for_teacher" in line)
    teacher_var = next(line for line in submit if "teacher-tutor" in line).split("=", 1)[0]
    assert "--dependency=afterok:" in corpus_line and f"${teacher_var}" in corpus_line


def test_a_killed_teacher_resumes_in_its_folder(tmp_path):
    step = build_plan(_study(tmp_path))["teacher:tutor"]
    (step.output / "pretrain").mkdir(parents=True)
    assert step.status() == "resume"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace('model = "teacher:tutor"', 'model = "teacher:tutr"'),
            r"study\.toml: \[corpora\.problems_for_teacher\]\.generate\.model: unknown teacher 'tutr' \(teachers: tutor\)",
        ),
        (
            lambda t: t.replace(
                "sft = { samples = 32, blend = { gold = 1.0 } }", "sft = { samples = 32, blend = { gld = 1.0 } }"
            ),
            r"\[teachers\.tutor\]\.sft\.blend\.gld: unknown corpus 'gld'",
        ),
        (
            lambda t: t.replace(
                "pretrain = [ { samples = 48, blend = { gold = 1.0 } } ]",
                "pretrain = [ { samples = 48, blend = { gold = 0.5, problems_for_teacher = 0.5 } } ]",
            ),
            r"\[teachers\.tutor\]: is trained on its own output \(a cycle: teacher 'tutor' <- corpus "
            r"'problems_for_teacher' <- teacher 'tutor'\)",
        ),
        (
            lambda t: t.replace('train_on = ["gold"]', 'train_on = ["gold", "problems_for_teacher"]'),
            r"\[tokenizer\]\.train_on\[1\]: corpus 'problems_for_teacher' is generated by teacher 'tutor'",
        ),
        (
            lambda t: t.replace("max_tokens = 48,", "max_tokens = 48, max_model_len = 512,"),
            r"generate\.max_model_len: 512 exceeds the seq_len 128 of teacher 'tutor'",
        ),
        (
            lambda t: t.replace("sft_settings = { optim", "sft_settings = { run_dir = 'x', optim"),
            r"\[teachers\.tutor\]\.sft_settings\.run_dir: is set by the study runner",
        ),
        (
            lambda t: t.replace("model = { layers = 2, hidden = 64,", "model = { layers = 2, hiden = 64,"),
            r"\[teachers\.tutor\]\.model\.hiden: unknown key",
        ),
    ],
)
def test_bad_teacher_tables_name_file_table_and_key(tmp_path, edit, message):
    with pytest.raises(FrontloadError, match=message):
        _study(tmp_path, edit)


def test_two_teachers_that_train_on_each_other_are_a_cycle(tmp_path):
    extra = """
[corpora.second_gen]
source = { kind = "generators", families = ["arithmetic"], n = 8, difficulty = [1, 1], seed = 6 }
generate = { model = "teacher:second", max_tokens = 48 }

[teachers.second]
pretrain = [ { samples = 16, blend = { problems_for_teacher = 1.0 } } ]
"""

    def edit(t):
        t = t.replace(
            "pretrain = [ { samples = 48, blend = { gold = 1.0 } } ]",
            "pretrain = [ { samples = 48, blend = { gold = 1.0, second_gen = 1.0 } } ]",
        )
        return t + extra

    with pytest.raises(FrontloadError, match=r"\[teachers\.(tutor|second)\]: is trained on its own output"):
        _study(tmp_path, edit)


def _ancestors(plan, step_id: str) -> list:
    need, todo = set(), [step_id]
    while todo:
        s = todo.pop()
        if s not in need:
            need.add(s)
            todo.extend(plan[s].deps)
    return [s for s in plan.ordered() if s.id in need]


@pytest.mark.vllm
def test_teacher_trains_exports_and_its_rollouts_are_verified_filtered_and_accounted(tmp_path):
    pytest.importorskip("vllm")
    study = _study(tmp_path)
    plan = build_plan(study)
    for step in _ancestors(plan, "corpus:problems_for_teacher"):
        run_step(step)
    teacher = plan["teacher:tutor"]
    export = teacher.output / "export"
    assert (teacher.output / DONE).read_text().strip() == str(export)
    assert json.loads((export / "config.json").read_text())["max_position_embeddings"] == 128

    corpus = plan["corpus:problems_for_teacher"].output
    manifest = json.loads((corpus / "manifest.json").read_text())
    acc = manifest["account"]
    assert acc["in"] == 12 * 2  # problems x rollouts, all scored
    assert acc["in"] == acc["kept"] + sum(acc["dropped"].values()) and acc["kept"] > 0
    kept = [json.loads(x) for f in sorted((corpus / "data").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(kept) == acc["kept"]
    for r in kept:
        md = r["metadata"]
        # Records cite the teacher by name and fingerprint, never by a workspace path.
        assert md["teacher"]["model"] == f"teacher:tutor@{teacher.fingerprint}" and md["teacher"]["backend"] == "vllm"
        assert md["verify_v1"] in ("correct", "wrong", "unparseable") and 0.0 <= md["pass_rate_v1"] <= 1.0
        assert md["trace"] and md["completion"] and r["text"].endswith(md["response"])
    # The rerun reuses the teacher and the corpus.
    assert build_plan(study)["teacher:tutor"].status() == "reuse"
    assert build_plan(study)["corpus:problems_for_teacher"].status() == "reuse"
