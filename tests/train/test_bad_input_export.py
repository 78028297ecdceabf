"""`frontload export` never destroys what it did not write: a user's folder, or the checkpoint it reads."""

import json

import pytest
from export_helpers import save, tiny_model

from frontload.core.errors import FrontloadError
from frontload.train.export import export_hf


@pytest.fixture(scope="module")
def ckpt(tiny_tokenizer, tmp_path_factory):
    model, cfg = tiny_model(tiny_tokenizer, seed=5)
    return save(model, cfg, tiny_tokenizer, tmp_path_factory.mktemp("export_ckpt"))


def test_export_refuses_nonempty_dir(ckpt, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("two years of work")
    for overwrite in (False, True):
        with pytest.raises(FrontloadError, match="is not a previous export.*--overwrite"):
            export_hf(ckpt, out, overwrite=overwrite)
    assert (out / "thesis.tex").read_text() == "two years of work"
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_export_refuses_the_checkpoint_it_reads(ckpt):
    before = sorted(p.relative_to(ckpt) for p in ckpt.rglob("*"))
    for out in (ckpt, ckpt / "hf", ckpt.parent, ckpt / "tokenizer"):
        with pytest.raises(FrontloadError, match="overlaps the checkpoint being exported"):
            export_hf(ckpt, out, overwrite=True)
    assert sorted(p.relative_to(ckpt) for p in ckpt.rglob("*")) == before


def test_export_overwrite_replaces_only_a_previous_export(ckpt, tmp_path):
    out = tmp_path / "hf"
    (out).mkdir()  # an empty folder is fine
    export_hf(ckpt, out)
    assert json.loads((out / "frontload_export.json").read_text())["step"] == 1
    with pytest.raises(FrontloadError, match="holds a previous export; pass --overwrite"):
        export_hf(ckpt, out)
    (out / "stale.txt").write_text("left by the previous export's owner")
    export_hf(ckpt, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != "hf"]  # no .tmp/.old folders left behind


def test_export_command_says_so_in_one_line(ckpt, tmp_path, capsys):
    from frontload.cli import main

    (tmp_path / "notes.txt").write_text("x")
    assert main(["export", str(ckpt), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a previous export" in err and (tmp_path / "notes.txt").exists()
