"""Slurm ``srun``: a task of a step, counted from the step's own variables.

A task of an srun step has SLURM_STEP_ID and SLURM_PROCID; the batch script's own shell has
SLURM_PROCID=0 and the allocation's SLURM_NTASKS too, but no step id, and is one process.
Lightning's detection is not used: it refuses every job named ``bash`` or ``interactive`` (what
``salloc`` and ``srun -n 2 bash ...`` are called), and then each of the step's tasks would run
the whole job alone. The step's counts (SLURM_STEP_NUM_TASKS, SLURM_STEP_NUM_NODES,
SLURM_STEP_TASKS_PER_NODE) come first: ``srun -n 1`` inside an ``--ntasks-per-node=2`` job keeps
the job's SLURM_NTASKS_PER_NODE=2.
"""

from __future__ import annotations

import os
import re
import warnings

from hpcue.distributed.launchers.base import Launcher, TopologyError, int_env
from hpcue.distributed.launchers.mpi import mpiexec_size, started_by_mpiexec


def step_task() -> bool:
    """Whether this process is a task of an srun step (not the batch script's own shell)."""
    return "SLURM_PROCID" in os.environ and (
        "SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ)


def step_tasks() -> int:
    """The tasks of this process's step: SLURM_STEP_NUM_TASKS, else SLURM_NTASKS."""
    return int_env("SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in os.environ
                   else "SLURM_NTASKS")


def tasks_per_node() -> int:
    """The step's tasks per node: SLURM_STEP_TASKS_PER_NODE, else SLURM_TASKS_PER_NODE ('2(x3)' or
    '2,1': uneven is an error), else SLURM_NTASKS_PER_NODE (a job's option, stale in a smaller
    step)."""
    for var in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if var in os.environ:
            raw = os.environ[var]
            counts = {int(m.group(1)) for m in re.finditer(r"(\d+)(?:\(x\d+\))?", raw)}
            if len(counts) != 1:
                raise TopologyError(f"{var}={raw!r}: hpcue needs the same number of tasks on "
                                    f"every node (use --ntasks-per-node)")
            return counts.pop()
    return int_env("SLURM_NTASKS_PER_NODE")


def mpiexec_in_step() -> bool:
    """An mpiexec run inside the allocation starts its ranks under its own srun step (MPICH's
    hydra and Open MPI launch one proxy task per node): its size then differs from the step's."""
    return started_by_mpiexec() and mpiexec_size() != step_tasks()


class Slurm(Launcher):
    name = "slurm"
    started_by = "srun"

    @staticmethod
    def detect() -> bool:
        """A task of an srun step, whatever the job's name, unless an mpiexec started it."""
        try:
            return step_task() and not mpiexec_in_step()
        except TopologyError:  # a step with unreadable counts: Slurm's, and __init__ says so
            return step_task()

    def __init__(self) -> None:
        if not step_task():
            raise TopologyError("launcher slurm: this process is not a task of an srun step "
                                "(no SLURM_STEP_ID or SLURM_PROCID): start it with srun")
        self.world_size, self.rank = step_tasks(), int_env("SLURM_PROCID")
        self.local_rank, self.node_rank = int_env("SLURM_LOCALID"), int_env("SLURM_NODEID")
        self.num_nodes = int_env(next((v for v in ("SLURM_STEP_NUM_NODES", "SLURM_NNODES")
                                       if v in os.environ), "SLURM_JOB_NUM_NODES"))
        self.ranks_per_node = tasks_per_node()

    def cluster_environment(self):
        from lightning.fabric.plugins.environments import SLURMEnvironment

        # Lightning insists on --ntasks-per-node once SLURM_NTASKS > 1; the layout was checked
        os.environ.setdefault("SLURM_NTASKS_PER_NODE", str(self.ranks_per_node))
        # its hint that srun "is not used" is false here: hpcue found the step's task
        warnings.filterwarnings("ignore", message=r".*`srun` command is available on your "
                                                  r"system but is not used.*")
        return SLURMEnvironment(auto_requeue=False)
