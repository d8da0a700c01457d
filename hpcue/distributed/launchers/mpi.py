"""MPI ``mpiexec``: counts from mpi4py's COMM_WORLD and its shared-memory split.

Importing ``mpi4py.MPI`` initialises MPI in the process, so it happens only when an mpiexec's
own size variable says more than one process was started.
"""

from __future__ import annotations

import os

from hpcue.distributed.launchers.base import Launcher, TopologyError

# set by mpiexec (MPICH/hydra, Open MPI, Intel MPI)
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


def started_by_mpiexec() -> bool:
    return any(int(os.environ.get(v, "1") or 1) > 1 for v in SIZE_VARS
               if os.environ.get(v, "").isdigit())


class Mpi(Launcher):
    name = "mpi"

    @staticmethod
    def detect() -> bool:
        if not started_by_mpiexec():
            return False
        from lightning.fabric.plugins.environments import MPIEnvironment

        return MPIEnvironment.detect()

    def __init__(self) -> None:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
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
