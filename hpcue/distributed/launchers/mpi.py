"""MPI ``mpiexec``: counts from mpi4py's COMM_WORLD and its shared-memory split.

Importing ``mpi4py.MPI`` loads and initialises the MPI library, and a plain install has none
(mpi4py then raises RuntimeError: the library comes from the ``[mpi]`` extra or the site's MPI
module). So it is imported only when this launcher is chosen (``runtime.launcher: mpi``) or
detected (an mpiexec's own size variable says more than one process), never to find out.
"""

from __future__ import annotations

import os
from types import ModuleType

from hpcue.distributed.launchers.base import Launcher, TopologyError

# set by mpiexec (MPICH/hydra, Open MPI, Intel MPI)
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")
NO_LIBRARY = ("--launcher mpi needs an MPI library: pip install 'hpcue[mpi]' or load your "
              "site's MPI module")


def _sizes() -> dict[str, int]:
    return {v: int(os.environ[v]) for v in SIZE_VARS if os.environ.get(v, "").isdigit()}


def started_by_mpiexec() -> bool:
    return any(n > 1 for n in _sizes().values())


def mpiexec_size() -> int:
    """The most processes any mpiexec variable names (1 when none is set)."""
    return max(_sizes().values(), default=1)


def load_mpi() -> ModuleType:
    """``mpi4py.MPI``, or one TopologyError when no MPI library can be loaded."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: no libmpi found
        started = ", ".join(f"{k}={v}" for k, v in _sizes().items())
        where = f"; mpiexec started this process ({started})" if started else ""
        raise TopologyError(f"{NO_LIBRARY} (mpi4py: {exc}){where}") from None
    return MPI


class Mpi(Launcher):
    name = "mpi"

    @staticmethod
    def detect() -> bool:
        """An mpiexec's variables say more than one process; mpi4py is not imported to ask."""
        return started_by_mpiexec()

    def __init__(self) -> None:
        MPI = load_mpi()
        world = MPI.COMM_WORLD
        started = mpiexec_size()
        if world.Get_size() == 1 and started > 1:
            named = ", ".join(f"{k}={v}" for k, v in _sizes().items())
            raise TopologyError(f"mpiexec started {started} processes ({named}) but mpi4py's MPI "
                                f"library sees one: each would run the whole job alone. Use the "
                                f"mpiexec of the MPI library mpi4py loads "
                                f"({MPI.Get_library_version().splitlines()[0].strip()})")
        local = world.Split_type(MPI.COMM_TYPE_SHARED)
        per_node = local.Get_size()
        sizes = world.allgather(per_node)
        if len(set(sizes)) != 1:
            raise TopologyError(f"mpiexec placed {sorted(set(sizes))} ranks on different nodes; "
                                f"hpcue needs the same number of ranks on every node")
        self.world_size, self.rank = world.Get_size(), world.Get_rank()
        self.local_rank, self.ranks_per_node = local.Get_rank(), per_node
        self.node_rank, self.num_nodes = self.rank // per_node, self.world_size // per_node

    def cluster_environment(self):
        from lightning.fabric.plugins.environments import MPIEnvironment

        return MPIEnvironment()
