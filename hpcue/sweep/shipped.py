"""What hpcue ships beside its code: run configs, sweep specs, machine profiles, job templates.

The repository keeps them at its top level (``configs/``, ``jobs/``); ``pyproject.toml`` maps
those folders into the package as ``hpcue._configs`` and ``hpcue._jobs``, so a wheel carries
them and an editable install points at the repository's own copies. They are read through
``importlib.resources``, never relative to the current directory: an installed hpcue renders
and runs its sweeps from any directory.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from hpcue.errors import ConfigError

CONFIGS = "hpcue._configs"
JOBS = "hpcue._jobs"


@cache
def _folder(package: str) -> Path:
    """The folder of a data package, as a real path (job scripts name the files in it)."""
    try:
        root = files(package)
    except ModuleNotFoundError:
        raise ConfigError(f"hpcue's shipped files ({package}) are not installed with it: "
                          f"install hpcue (pip install . or pip install -e .)") from None
    if not isinstance(root, Path):  # a zip import: there is no path a job script could name
        raise ConfigError(f"hpcue's shipped files ({package}) are inside {root}, not in a "
                          f"folder: install hpcue unzipped")
    return root


def configs_dir() -> Path:
    """The shipped run configs (``configs/``; ``base/`` beside them)."""
    return _folder(CONFIGS)


def machines_dir() -> Path:
    """The shipped machine profiles (``configs/machines/``)."""
    return configs_dir() / "machines"


def sweeps_dir() -> Path:
    """The shipped sweep specs (``configs/sweeps/``)."""
    return configs_dir() / "sweeps"


def jobs_dir() -> Path:
    """The job-script templates (``jobs/``)."""
    return _folder(JOBS)


def names(folder: Path) -> list[str]:
    """The YAML files of a folder by name (no suffix), sorted: what a lookup there knows."""
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
