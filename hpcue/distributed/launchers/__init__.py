"""The launchers hpcue runs under, one class each; their names are defined here only."""

from __future__ import annotations

from hpcue.distributed.launchers.base import Launcher, TopologyError
from hpcue.distributed.launchers.local import Local
from hpcue.distributed.launchers.lsf import Lsf
from hpcue.distributed.launchers.mpi import Mpi
from hpcue.distributed.launchers.slurm import Slurm
from hpcue.distributed.launchers.torchrun import Torchrun

#: Lightning's own detection order; one local process when none of them started this one.
DETECTION_ORDER: tuple[type[Launcher], ...] = (Torchrun, Slurm, Lsf, Mpi)
LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (Local, *DETECTION_ORDER)}
#: What ``runtime.launcher`` and ``--launcher`` accept.
LAUNCHER_CHOICES: tuple[str, ...] = ("auto", *LAUNCHERS)


def detect_launcher() -> str:
    """The name of the first launcher whose ``detect()`` holds, else ``local``."""
    return next((cls.name for cls in DETECTION_ORDER if cls.detect()), Local.name)


def read_launcher(name: str) -> Launcher:
    """The named launcher's counts for this rank (``auto``: detected)."""
    if name not in LAUNCHER_CHOICES:
        raise TopologyError(f"unknown launcher {name!r}: expected one of "
                            f"{', '.join(LAUNCHER_CHOICES)}")
    if name == "auto":
        return LAUNCHERS[detect_launcher()]()
    cls = LAUNCHERS[name]
    if cls.started_by and not cls.detect():
        raise TopologyError(f"`--launcher {name}` (runtime.launcher: {name}) but this process "
                            f"was not started by {cls.started_by}: run it under "
                            f"{cls.started_by}, or let hpcue detect the launcher (auto)")
    return cls()


__all__ = ["DETECTION_ORDER", "LAUNCHERS", "LAUNCHER_CHOICES", "Launcher", "TopologyError",
           "detect_launcher", "read_launcher"]
