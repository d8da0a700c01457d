"""OpenMP threads for each rank, set before torch starts its thread pools.

OpenMP pools started with one thread per core in every rank oversubscribe the node (and spin):
under mpiexec that made stage 1 about 30x slower here. A rank the launcher bound to its own
cores (``srun -c7``, ``jsrun -c7 -bpacked:7``: its CPU affinity is smaller than the node) gets
one thread per core of its affinity; a rank that sees every core of the node (mpiexec, srun
without binding) gets its share, cores / ranks per node. torchrun already sets
OMP_NUM_THREADS=1, and OMP_NUM_THREADS set by the user always wins. The ranks-per-node count is
read from the launchers' environments. This module must not import torch.
"""

from __future__ import annotations

import os
import re

from hpcue.distributed.launchers.slurm import step_task

_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


def _slurm_step_tasks_per_node() -> int:
    """Tasks per node of this srun step; 1 outside a step (the batch script is one process)."""
    if not step_task():
        return 1
    for var in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"):
        match = re.match(r"(\d+)", os.environ.get(var, ""))
        if match:
            return max(1, int(match.group(1)))
    return 1


def ranks_per_node_hint() -> int:
    for var in _LOCAL_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    per_step = _slurm_step_tasks_per_node()
    if per_step > 1:
        return per_step
    if "JSM_NAMESPACE_SIZE" in os.environ and "LSB_DJOB_RANKFILE" in os.environ:
        try:
            with open(os.environ["LSB_DJOB_RANKFILE"]) as fh:
                hosts = {line.strip() for line in list(fh)[1:] if line.strip()}
            return max(1, int(os.environ["JSM_NAMESPACE_SIZE"]) // max(1, len(hosts)))
        except (OSError, ValueError):
            return 1
    return 1


def threads_per_rank(per_node: int) -> int:
    """Threads for one of ``per_node`` ranks on this node, from this process's CPU affinity.

    An affinity smaller than the node is the launcher's binding: those cores are this rank's own
    (unless ``per_node`` sets that large could not fit on the node together, which is one set
    shared, e.g. a job's cgroup). An affinity of the whole node is shared by every rank on it.
    """
    mine = len(os.sched_getaffinity(0))
    node = os.cpu_count() or mine
    if mine < node and mine * per_node <= node:
        return max(1, mine)
    return max(1, mine // per_node)


def limit_threads_per_rank() -> None:
    """Set OMP_NUM_THREADS for this rank when several share a node, unless it is already set."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    per_node = ranks_per_node_hint()
    if per_node > 1:
        os.environ["OMP_NUM_THREADS"] = str(threads_per_rank(per_node))
