"""What hpcue tells the terminal, at one of three levels (``-q``, default, ``-v``).

hpcue's own lines start with ``[hpcue]``; a user reading a batch log should find them without
Lightning's banners in between (those go to the run's log file: ``training/lightning_log.py``).
Errors and warnings (stderr) and a run's closing summary are printed at every level. Progress
bars are drawn on a terminal only: a batch log (a file, a pipe) would keep every redraw, joined
by carriage returns, and gets one plain line an epoch instead (``training/progress_bar.py``).
"""

from __future__ import annotations

import sys
from typing import TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_level(level: int) -> None:
    global _level
    _level = level


def level() -> int:
    return _level


def say(message: str) -> None:
    """One ``[hpcue]`` line, unless ``-q``."""
    if _level >= NORMAL:
        print(f"[hpcue] {message}", flush=True)


def warn(message: str) -> None:
    """One ``[hpcue] WARNING:`` line on stderr, at every level: what must not go unread (a set
    exported without a verdict of protection, intervals from a small test set) is not ``-q``'s
    to silence."""
    print(f"[hpcue] WARNING: {message}", file=sys.stderr, flush=True)


def on_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal, where a bar redraws itself in place."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by something without one, or closed
        return False


def bars_off(stream: TextIO | None = None) -> bool:
    """Whether progress bars are hidden: under ``-q``, and wherever they would not reach a
    terminal. ``stream``: where the bar draws (default: stderr, tqdm's)."""
    return _level == QUIET or not on_terminal(sys.stderr if stream is None else stream)
