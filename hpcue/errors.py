"""The project's own errors: bad input, missing inputs, peers that failed, a queue not readable.

What a user can cause (a config, a file, a launcher's variables) raises an ``HpcueError``; the
CLI prints those (and the system's ``OSError``s) as one line and exits 2. Anything else is a bug
and keeps its traceback.
The built-in base each one also has (``ValueError``, ``FileNotFoundError``) says what kind of
problem it is to callers that catch by kind.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices``, or "" if none is close: the
    tail of an error about an unknown name."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


class HpcueError(Exception):
    """Base of every error the CLI reports as one line (exit status 2)."""


class ConfigError(HpcueError, ValueError):
    """A config that cannot run: names the file or key and what is wrong."""


class InputError(HpcueError, ValueError):
    """Input data or an option that cannot be used: names the file or option and the problem."""


class MissingInputError(HpcueError, FileNotFoundError):
    """A file or folder the user must provide is not there: names the exact path."""


class NonFiniteError(HpcueError, ArithmeticError):
    """A NaN or infinite number where a result must be finite (a loss, a perturbation, a result):
    names what and where, so a diverged run never reports it as protection."""


class DiskFullError(HpcueError, OSError):
    """No space (or quota) left while writing a result: names the path; the temporary is gone."""


class BusyError(HpcueError, RuntimeError):
    """Another hpcue process holds the run directory: names it (host, pid)."""


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived: not an error of the input, so nothing is restored or removed;
    the CLI says where the run resumes and exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
