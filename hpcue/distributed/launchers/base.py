"""What every launcher class gives: whether it started this process, and this rank's counts.

Modelled on Lightning's ``plugins/environments/``: one small class per launcher, a ``detect()``
and a handful of attributes, nothing else. The counts always come from the launcher, never from
the user. Nothing here imports torch or Lightning at module level: the config reads the launcher
names before the CLI has limited the threads torch will start.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from hpcue.errors import HpcueError

if TYPE_CHECKING:
    from lightning.fabric.plugins.environments import ClusterEnvironment


class TopologyError(HpcueError, RuntimeError):
    """The launcher's counts do not agree: one clear error before any collective starts."""


def int_env(name: str) -> int:
    """An integer environment variable the launcher must have set, or a TopologyError."""
    value = os.environ.get(name)
    if value is None or not value.strip().lstrip("-").isdigit():
        raise TopologyError(f"environment variable {name} is {value!r}, expected an integer")
    return int(value)


class Launcher(ABC):
    """One launcher. Constructing it reads (and checks) this rank's counts from its variables."""

    name: ClassVar[str]
    #: the command that starts this launcher's processes ("" where one process may start alone:
    #: the local launcher, and an MPI singleton)
    started_by: ClassVar[str] = ""
    world_size: int
    rank: int
    local_rank: int
    node_rank: int
    num_nodes: int
    ranks_per_node: int

    @staticmethod
    @abstractmethod
    def detect() -> bool:
        """Whether this launcher started the current process."""

    @abstractmethod
    def cluster_environment(self) -> ClusterEnvironment:
        """Lightning's environment for this launcher: the main address and port come from it."""
