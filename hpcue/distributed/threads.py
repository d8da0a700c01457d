"""Share a node's cores between the ranks on it, before torch starts its thread pools.

OpenMP pools started with one thread per core in every rank oversubscribe the node (and spin):
under mpiexec that made stage 1 about 30x slower here. torchrun already sets OMP_NUM_THREADS=1;
for the other launchers the ranks-per-node count is read from their environment. This module
must not import torch.
"""

from __future__ import annotations

import os
import re

_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                    "SLURM_NTASKS_PER_NODE")


def ranks_per_node_hint() -> int:
    for var in _LOCAL_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    match = re.match(r"(\d+)", os.environ.get("SLURM_TASKS_PER_NODE", ""))
    if match and "SLURM_PROCID" in os.environ:
        return int(match.group(1))
    if "JSM_NAMESPACE_SIZE" in os.environ and "LSB_DJOB_RANKFILE" in os.environ:
        try:
            with open(os.environ["LSB_DJOB_RANKFILE"]) as fh:
                hosts = {line.strip() for line in list(fh)[1:] if line.strip()}
            return max(1, int(os.environ["JSM_NAMESPACE_SIZE"]) // max(1, len(hosts)))
        except (OSError, ValueError):
            return 1
    return 1


def limit_threads_per_rank() -> None:
    """Set OMP_NUM_THREADS = cores / ranks per node, unless the user or launcher set it."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    per_node = ranks_per_node_hint()
    if per_node > 1:
        cores = len(os.sched_getaffinity(0))
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // per_node))
