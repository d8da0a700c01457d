"""torchrun (TorchElastic): WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK."""

from __future__ import annotations

from hpcue.distributed.launchers.base import Launcher, int_env


class Torchrun(Launcher):
    name = "torchrun"
    started_by = "torchrun"

    @staticmethod
    def detect() -> bool:
        from lightning.fabric.plugins.environments import TorchElasticEnvironment

        return TorchElasticEnvironment.detect()

    def __init__(self) -> None:
        self.world_size, self.ranks_per_node = int_env("WORLD_SIZE"), int_env("LOCAL_WORLD_SIZE")
        self.rank, self.local_rank = int_env("RANK"), int_env("LOCAL_RANK")
        self.node_rank = int_env("GROUP_RANK")
        self.num_nodes = max(1, self.world_size // self.ranks_per_node)

    def cluster_environment(self):
        from lightning.fabric.plugins.environments import TorchElasticEnvironment

        return TorchElasticEnvironment()
