"""One process started by hand: the single-node debugging mode."""

from __future__ import annotations

from hpcue.distributed.launchers.base import Launcher


class Local(Launcher):
    name = "local"

    @staticmethod
    def detect() -> bool:
        return True

    def __init__(self) -> None:
        self.world_size = self.num_nodes = self.ranks_per_node = 1
        self.rank = self.local_rank = self.node_rank = 0

    def cluster_environment(self):
        from lightning.fabric.plugins.environments import LightningEnvironment

        return LightningEnvironment()
