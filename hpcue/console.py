"""What hpcue tells the terminal, at one of three levels (``-q``, default, ``-v``).

hpcue's own lines start with ``[hpcue]``; a user reading a batch log should find them without
Lightning's banners in between (those go to the run's log file: ``training/lightning_log.py``).
Errors (stderr) and a run's closing summary are printed at every level.
"""

from __future__ import annotations

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


def bars_off() -> bool:
    """Whether progress bars are hidden (``-q``)."""
    return _level == QUIET
