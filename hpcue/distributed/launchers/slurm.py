"""Slurm ``srun``: SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, tasks per node."""

from __future__ import annotations

import os
import re

from hpcue.distributed.launchers.base import Launcher, TopologyError, int_env


def tasks_per_node() -> int:
    """SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE ('2(x3)' or '2,1': uneven is an error)."""
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        return int_env("SLURM_NTASKS_PER_NODE")
    raw = os.environ.get("SLURM_TASKS_PER_NODE", "")
    counts = {int(m.group(1)) for m in re.finditer(r"(\d+)(?:\(x\d+\))?", raw)}
    if len(counts) != 1:
        raise TopologyError(f"SLURM_TASKS_PER_NODE={raw!r}: hpcue needs the same number of "
                            f"tasks on every node (use --ntasks-per-node)")
    return counts.pop()


class Slurm(Launcher):
    name = "slurm"

    @staticmethod
    def detect() -> bool:
        """Lightning's test (which ignores interactive job names), and a task of a step."""
        from lightning.fabric.plugins.environments import SLURMEnvironment

        return SLURMEnvironment.detect() and "SLURM_PROCID" in os.environ

    def __init__(self) -> None:
        self.world_size, self.rank = int_env("SLURM_NTASKS"), int_env("SLURM_PROCID")
        self.local_rank, self.node_rank = int_env("SLURM_LOCALID"), int_env("SLURM_NODEID")
        self.num_nodes = int_env("SLURM_NNODES" if "SLURM_NNODES" in os.environ
                                 else "SLURM_JOB_NUM_NODES")
        self.ranks_per_node = tasks_per_node()
        # Lightning insists on --ntasks-per-node; an even --ntasks layout was checked above
        os.environ.setdefault("SLURM_NTASKS_PER_NODE", str(self.ranks_per_node))

    def cluster_environment(self):
        from lightning.fabric.plugins.environments import SLURMEnvironment

        return SLURMEnvironment(auto_requeue=False)
