"""Progress bars that read well in a terminal and in a log.

In a terminal :func:`progress_bar` is a plain tqdm bar. When stderr is not a terminal (a log file,
CI, a Slurm job) tqdm would write one carriage-return update per step into a single endless line;
here it writes a whole line at most every :data:`LOG_INTERVAL` seconds, plus the bar's last state.
"""

from __future__ import annotations

import io
import sys
from typing import Any

LOG_INTERVAL = 30.0  # seconds between progress lines in a log


class _Lines(io.TextIOBase):
    """A stream that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any):
    """``tqdm(iterable, **kwargs)``, drawn in place in a terminal and as occasional lines in a log."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("file", _Lines(sys.stderr))
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL)
        kwargs.setdefault("ncols", 100)
        kwargs.setdefault("ascii", True)
    return tqdm(iterable, **kwargs)
