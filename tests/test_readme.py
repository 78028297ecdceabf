"""README.md stays true: every TOML block loads as a study, every ``frontload ...`` command it shows exists.

A TOML block is a study snippet: its tables are merged into the shipped default study (a table into
the same table; an ``[[arms]]`` entry into the default arm of the same name, or at the same position
when it names none) and the result must load, with every check a real study file gets. A command is
walked down the CLI's own parser; it must reach a real subcommand, answer ``--help``, and every
option it shows must be one that subcommand has.
"""

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from frontload.cli import build_parser
from frontload.study_file import study_from_tables

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEFAULT_STUDY = ROOT / "frontload" / "studies" / "default.toml"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README) if kind == lang]


def _commands() -> list[str]:
    """``frontload ...`` lines of plain code blocks and ``frontload ...`` spans in the text and tables."""
    found = []
    for body in _blocks(""):
        found += [line.split("  #")[0].strip() for line in body.splitlines() if line.startswith("frontload ")]
    prose = FENCE.sub("", README)
    found += [span for span in re.findall(r"`(frontload [^`]+)`", prose)]
    return list(dict.fromkeys(found))


def _merge(base, snippet):
    if isinstance(base, dict) and isinstance(snippet, dict):
        out = dict(base)
        for key, value in snippet.items():
            out[key] = _merge(base[key], value) if key in base and key != "arms" else value
            if key == "arms" and key in base:
                out[key] = _merge_arms(base[key], value)
        return out
    return snippet


def _merge_arms(base: list[dict], snippet: list[dict]) -> list[dict]:
    arms = [dict(a) for a in base]
    for i, arm in enumerate(snippet):
        at = next((j for j, a in enumerate(arms) if a["name"] == arm.get("name")), None)
        if at is None and "name" not in arm and i < len(arms):
            at = i
        if at is None:
            arms.append(arm)
        else:
            arms[at] = _merge(arms[at], arm)
    return arms


def test_readme_shows_toml_and_commands():
    assert len(_blocks("toml")) >= 2 and len(_commands()) >= 10  # the tests below check something


@pytest.mark.parametrize("index", range(len(_blocks("toml"))))
def test_toml_block_loads_as_a_study(index):
    snippet = tomllib.loads(_blocks("toml")[index])
    base = tomllib.loads(DEFAULT_STUDY.read_text(encoding="utf-8"))
    study = study_from_tables(_merge(base, snippet), Path(f"README.md toml block {index + 1}"))
    # The snippet's own values made it into the study (a merge that dropped them would prove nothing).
    if "model" in snippet:
        assert all(study.model[k] == v for k, v in snippet["model"].items())
    if "corpora" in snippet:
        assert set(snippet["corpora"]) <= set(study.corpora)


def _walk(words: list[str]) -> tuple[list[str], argparse.ArgumentParser]:
    """The longest run of subcommand names the parser knows, and the parser it ends in."""
    parser, path = build_parser(), []
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser, path = subs[0].choices[word], [*path, word]
    return path, parser


@pytest.mark.parametrize("command", _commands())
def test_command_exists_and_answers_help(command, capsys):
    words = shlex.split(command.replace("[", " ").replace("]", " ").replace("...", " "))[1:]
    path, parser = _walk(words)
    assert path, f"README shows `{command}`, but `frontload {words[0]}` is no command"
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, "--help"])
    assert exit_.value.code == 0 and "usage: frontload" in capsys.readouterr().out
    options = {o for a in parser._actions for o in a.option_strings}
    shown = [w.rstrip(",") for w in words[len(path) :] if w.startswith("-")]
    missing = [o for o in shown if o not in options]
    assert not missing, f"README shows `{command}`, but `frontload {' '.join(path)}` has no option {missing}"
