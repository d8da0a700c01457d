"""How a detected topology is handed to Lightning.

Every Trainer gets its environment from here, one process included, so Lightning never runs its
own detection: that imports mpi4py (which needs an MPI library a plain install lacks, and
initialises MPI), refuses Slurm jobs named ``bash`` or ``interactive``, and would install its
own Slurm requeue handlers. Each rank is presented as a node with one device: Lightning then
needs no device count that could disagree with the launcher (jsrun -g1 and srun
--gpus-per-task=1 show each rank one GPU, so "devices=6" would fail), and its global rank is the
launcher's rank.
"""

from __future__ import annotations

from lightning.fabric.plugins.environments import ClusterEnvironment, LightningEnvironment

from hpcue.distributed.topology import Topology, TopologyError


class RankAsNode(ClusterEnvironment):
    def __init__(self, topo: Topology) -> None:
        super().__init__()
        self.topo = topo

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self.topo.env.main_address if self.topo.env is not None else "127.0.0.1"

    @property
    def main_port(self) -> int:
        return self.topo.env.main_port if self.topo.env is not None else 0

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return self.topo.world_size

    def set_world_size(self, size: int) -> None:
        if size != self.topo.world_size:
            raise TopologyError(f"Lightning computed world size {size}, the launcher says "
                             f"{self.topo.world_size}")

    def global_rank(self) -> int:
        return self.topo.rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return 0

    def node_rank(self) -> int:
        return self.topo.rank


def trainer_environment(topo: Topology, distributed: bool) -> ClusterEnvironment:
    """The environment a Trainer gets: this rank as a node of the launcher's world, or (a
    training in this process only, one process or one rank alone) a plain world of one."""
    return RankAsNode(topo) if distributed else LightningEnvironment()
