"""atomic_folder: a folder appears whole or not at all, and replacing one is the caller's decision."""

import pytest

from frontload.core.atomic import atomic_folder
from frontload.core.errors import FrontloadError


def test_success_renames_into_place_and_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "whole.txt").write_text("whole")
    assert (target / "whole.txt").read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_existing_folder_is_replaced_only_when_allowed(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FrontloadError, match="exists and is not empty"), atomic_folder(target) as tmp:
        (tmp / "never.txt").write_text("x")
    assert (target / "old.txt").exists()
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_a_named_staging_folder_is_cleared_first_and_kept_after_a_failure(tmp_path):
    target, staging = tmp_path / "out", tmp_path / "out.partial"
    staging.mkdir()
    (staging / "stale.txt").write_text("from a killed attempt")
    with pytest.raises(RuntimeError), atomic_folder(target, staging=staging) as tmp:
        assert tmp == staging and list(tmp.iterdir()) == []  # a leftover is never trusted
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("failed")
    assert (staging / "half.txt").exists() and not target.exists()  # visible as an interrupted attempt
    with atomic_folder(target, staging=staging) as tmp:
        (tmp / "whole.txt").write_text("whole")
    assert (target / "whole.txt").exists() and not staging.exists()
