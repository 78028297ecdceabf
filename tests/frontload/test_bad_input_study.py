"""Bad study files fail at load, naming the file, the table and the key, before anything runs or is written."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from frontload.core.config import NAME_PATTERN, ConfigError
from frontload.study_file import load_study

TINY = Path(__file__).with_name("tiny_study.toml")


def _write(tmp_path: Path, edit, folder: str = "") -> Path:
    path = tmp_path / folder / "study.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(edit(TINY.read_text()))
    return path


def _arm_named(name: str):
    return lambda text: text.replace('name = "baseline"', f"name = {name}").replace(
        'baseline = "baseline"', "baseline = 'front_loaded'"
    )


# ---- names: one pattern, checked at load -------------------------------------------------------


@pytest.mark.parametrize("name", ['"a\\ntouch /tmp/x #"', '"../../x"', '".."', '"a b"', '"x/y"', '""', "'$(id)'"])
def test_study_refuses_an_arm_name_that_is_not_a_name(tmp_path, name):
    path = _write(tmp_path, _arm_named(name))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [[arms]][0].name") + ".*is not a valid name"):
        load_study(path)


def test_study_refuses_bad_corpus_task_and_study_names(tmp_path):
    cases = {
        "[corpora...]": lambda t: t.replace("[corpora.hq]", '[corpora.".."]'),
        "[eval].tasks[0].name": lambda t: t.replace('name = "heldout"', 'name = "../heldout"'),
        "[study].name": lambda t: t.replace('name = "tiny"', 'name = "tiny\\nrm -rf ~"'),
        "[[arms]][0].pretrain[0].blend.we b": lambda t: t.replace(
            "{ samples = 16, blend = { web = 1.0 } }, { samples = 16, blend = { web = 1.0 } }",
            '{ samples = 16, blend = { "we b" = 1.0 } }',
            1,
        ),
    }
    for key, edit in cases.items():
        path = _write(tmp_path, edit)
        with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}") + ".*not a valid name"):
            load_study(path)


def test_study_accepts_sweep_style_names(tmp_path):
    assert re.fullmatch(NAME_PATTERN, "front_loaded@share=0.10")
    study = load_study(_write(tmp_path, _arm_named('"front_loaded@share=0.10"')))
    assert study.arms[0].name == "front_loaded@share=0.10"


def test_job_script_quotes_paths_with_spaces(tmp_path, monkeypatch):
    from frontload.jobs import write_job_scripts

    path = _write(tmp_path, lambda t: t, folder="my studies; rm -rf x")
    study = load_study(path)
    study.study.workspace = str(tmp_path / "work space $(id)")
    monkeypatch.chdir(tmp_path)
    write_job_scripts(study, executor="slurm", submit=False)
    jobs = tmp_path / "work space $(id)" / "jobs"
    script = next(jobs.glob("*pretrain-baseline*.sbatch"))
    # Run the script with stand-ins for torchrun/frontload that record the arguments they get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("torchrun", "frontload"):
        (bin_dir / tool).write_text('#!/bin/bash\nprintf "%s\\n" "$PWD" "$@" > "$ARGS_OUT"\n')
        (bin_dir / tool).chmod(stat.S_IRWXU)
    out = tmp_path / "args.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_OUT": str(out)}
    subprocess.run(["bash", str(script)], check=True, env=env, cwd="/")
    args = out.read_text().splitlines()
    assert args[0] == str(tmp_path)  # the job starts where frontload ran
    assert str(path.resolve()) in args and any(a.startswith("pretrain:baseline:s") for a in args)
    assert args[args.index("--workspace") + 1] == str(tmp_path / "work space $(id)")
    assert not (tmp_path / "x").exists() and subprocess.run(["bash", "-n", str(jobs / "submit.sh")]).returncode == 0


# ---- numbers, inline tables, paths: checked at load ----------------------------------------------

FIRST_STAGE = "{ samples = 16, blend = { web = 1.0 } }, { samples = 16, blend = { web = 1.0 } }"


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda t: t.replace(FIRST_STAGE, "{ tokens = nan, blend = { web = 1.0 } }", 1),
            "[[arms]][0].pretrain[0].tokens",
        ),
        (
            lambda t: t.replace(FIRST_STAGE, "{ tokens = inf, blend = { web = 1.0 } }", 1),
            "[[arms]][0].pretrain[0].tokens",
        ),
        (lambda t: t.replace("blend = { hq = 1.0 }", "blend = { hq = -inf }", 1), "[[arms]][0].sft.blend.hq"),
        (lambda t: t.replace("samples = 2\n", "samples = 2\ntemperature = nan\n"), "[eval].temperature"),
        (lambda t: t.replace("hidden = 64", "hidden = inf"), "[model].hidden"),
        (lambda t: t.replace("optim = { lr = 3e-3 }", "optim = { lr = nan }"), "[pretrain].optim.lr"),
        (
            lambda t: t.replace(
                "[corpora.hq]\n", '[corpora.hq]\ngenerate = { endpoint = "http://h:1", extra_params = { t = nan } }\n'
            ),
            "[corpora.hq].generate.extra_params.t",
        ),
    ],
)
def test_study_refuses_non_finite_numbers(tmp_path, edit, key):
    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}") + ": must be a finite number"):
        load_study(path)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda t: t.replace(
                'filters = { dedup = ["exact"], decontaminate = true }', 'filters = { dedpu = ["exact"] }', 1
            ),
            "[corpora.reasoning].filters.dedpu",
        ),
        (
            lambda t: t.replace(
                "[corpora.hq]\n", '[corpora.hq]\ngenerate = { modle = "teacher", endpoint = "http://h:1" }\n'
            ),
            "[corpora.hq].generate.modle",
        ),
    ],
)
def test_study_refuses_typos_inside_inline_tables(tmp_path, edit, key):
    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}") + ": unknown key"):
        load_study(path)


def test_study_refuses_missing_input_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = ('source = { kind = "packaged_text" }', 'source = { kind = "files", paths = ["nope.jsonl"] }')
    path = _write(tmp_path, lambda t: t.replace(*files))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [corpora.web].source.paths[0]") + ".*does not exist"):
        load_study(path)
    (tmp_path / "nope.jsonl").write_text('{"text": "x"}\n')
    assert load_study(path).corpora["web"].source.paths == ["nope.jsonl"]
    task = ('families = ["arithmetic"], n = 8', 'path = "tasks/missing.jsonl"')
    path = _write(tmp_path, lambda t: t.replace(*task))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [eval].tasks[0].path") + ".*does not exist"):
        load_study(path)


def test_study_refuses_a_workspace_with_a_newline(tmp_path):
    path = _write(tmp_path, lambda t: t.replace('workspace = "ws"', 'workspace = "ws\\n#SBATCH --x"'))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [study].workspace") + ".*control character"):
        load_study(path)


def test_run_options_that_take_names_are_checked(tmp_path, capsys):
    from frontload.cli import main

    path = _write(tmp_path, lambda t: t)
    assert main(["run", str(path), "--dry-run", "--workspace", str(tmp_path / "w\nx")]) == 2
    assert "--workspace: " in capsys.readouterr().err
    assert main(["run", str(path), "--dry-run", "--workspace", str(tmp_path / "w"), "--only", "../x"]) == 2
    err = capsys.readouterr().err
    assert "--only '../x': no such step (steps: task:heldout, " in err and err.count("\n") == 1
