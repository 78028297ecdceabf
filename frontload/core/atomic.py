"""Folders that appear whole or not at all.

:func:`atomic_folder` yields a temporary sibling folder; when the block succeeds the folder is renamed
onto its target, so a reader (or a rerun after ``kill -9``) never sees a half-written one. A leftover
temporary folder is hidden (``.name.*.tmp``) and never read by the readers. Replacing an existing
target is the caller's decision, made before any work starts: ``replace`` says whether an existing
non-empty target may go, so no helper here deletes a folder nobody vouched for.

A caller that must see an interrupted attempt (the runner reports such a step as ``resume``; every
rank of a checkpoint save writes into one known folder) names the staging folder itself: a leftover
there is removed before the block, and it stays after a failure for inspection.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from frontload.core.errors import FrontloadError


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike,
    *,
    replace: bool | Callable[[Path], bool] = False,
    what: str = "folder",
    staging: str | os.PathLike | None = None,
) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; rename it onto ``target`` if the block succeeds.

    An existing non-empty ``target`` is refused unless ``replace`` is true (or a callable that returns
    true for it); the check runs before the block, so nothing is built only to be thrown away.
    ``staging`` names the temporary folder (same filesystem as ``target``) instead of a hidden random one.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FrontloadError(f"{target}: exists and is not a folder; refusing to replace it with a {what}")
    if target.exists() and any(target.iterdir()):
        allowed = replace(target) if callable(replace) else replace
        if not allowed:
            raise FrontloadError(f"{target}: exists and is not empty; refusing to replace it with a {what}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if staging is None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        tmp = Path(staging)
        # A leftover of a killed attempt: its contents are not trusted.
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        if staging is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        # Move the old folder aside first, so the new one lands by one rename and the old one is
        # removed only once the new one is in place.
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
