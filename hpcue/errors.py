"""The project's own errors: bad input, missing inputs, peers that failed, a queue not readable.

What a user can cause (a config, a file, a launcher's variables) raises an ``HpcueError``; the
CLI prints those (and the system's ``OSError``s) as one line and exits 2. Anything else is a bug
and keeps its traceback.
The built-in base each one also has (``ValueError``, ``FileNotFoundError``) says what kind of
problem it is to callers that catch by kind.
"""

from __future__ import annotations


class HpcueError(Exception):
    """Base of every error the CLI reports as one line (exit status 2)."""


class ConfigError(HpcueError, ValueError):
    """A config that cannot run: names the file or key and what is wrong."""


class InputError(HpcueError, ValueError):
    """Input data or an option that cannot be used: names the file or option and the problem."""


class MissingInputError(HpcueError, FileNotFoundError):
    """A file or folder the user must provide is not there: names the exact path."""
