"""OpenMP threads for each rank, and how they wait, set before torch starts its thread pools.

OpenMP pools started with one thread per core in every rank oversubscribe the node (and spin):
under mpiexec that made stage 1 about 30x slower here. A rank the launcher bound to its own
cores (``srun -c7``, ``jsrun -c7 -bpacked:7``: its CPU affinity is smaller than the node) gets
one thread per core of its affinity; a rank that sees every core of the node (mpiexec, srun
without binding) gets its share, cores / ranks per node. torchrun already sets
OMP_NUM_THREADS=1, and OMP_NUM_THREADS set by the user always wins. The ranks-per-node count is
read from the launchers' environments.

How idle threads wait: torch's OpenMP runtime (libgomp in the Linux wheels) lets a thread that
has finished its share of a parallel region spin, about 300000 turns, for the others before it
sleeps. That is free when the threads have their cores to themselves, and ruinous when they do
not: a spinning thread burns the core that the thread it waits for needs, so every parallel
region waits for a preempted thread (the issue: ``hpcue run`` 1,392 s instead of about 100 s
beside other CPU-bound work on 2 cores). ``benchmarks/contention.py`` (2 cores, 2 stage-1
epochs of the embedded default, medians of 2 interleaved repeats, with another user's tests
running too): spinning took 128 s "quiet" (78..177, under that other load) and 83 s beside one
busy loop (38..127); sleeping took 6.2 s quiet and 12.2 s busy (9.6..14.8), 2.0x. So a rank
whose cores are not provably its own (an affinity of the whole node: a laptop, a workstation,
mpiexec without binding) gets OMP_WAIT_POLICY=PASSIVE, idle threads sleep at once. A rank the
launcher bound to its own cores keeps the runtime's default. The thread count stays one per
core: one thread was as fast at 16 px (5.3 s quiet, 8.2 s busy, 1.5x), but it would leave a
quiet machine's other cores idle at sizes where they help (not measured here).
OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME set by the user wins, as does OMP_NUM_THREADS.
This module must not import torch.
"""

from __future__ import annotations

import os
import re

from hpcue.distributed.launchers.slurm import step_task

_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
# any of these set by the user is their choice of how OpenMP threads wait (libgomp, Intel's)
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


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


def _affinity() -> tuple[int, int]:
    """CPUs this process may run on, and CPUs of the node."""
    mine = len(os.sched_getaffinity(0))
    return mine, os.cpu_count() or mine


def owns_its_cores(per_node: int) -> bool:
    """Whether this rank's affinity is its own cores: a launcher's binding.

    An affinity smaller than the node is the launcher's binding: those cores are this rank's own
    (unless ``per_node`` sets that large could not fit on the node together, which is one set
    shared, e.g. a job's cgroup). An affinity of the whole node is shared: by every rank on it,
    and by whatever else runs there.
    """
    mine, node = _affinity()
    return mine < node and mine * per_node <= node


def threads_per_rank(per_node: int) -> int:
    """Threads for one of ``per_node`` ranks on this node, from this process's CPU affinity:
    every core of a rank's own (``owns_its_cores``), else its share of the shared set."""
    mine, _ = _affinity()
    if owns_its_cores(per_node):
        return max(1, mine)
    return max(1, mine // per_node)


def wait_policy(per_node: int) -> str | None:
    """OMP_WAIT_POLICY for this rank: PASSIVE where its cores may be shared, None to leave the
    runtime's default (the user chose one, or the launcher bound the rank to its own cores)."""
    if any(var in os.environ for var in WAIT_VARS) or owns_its_cores(per_node):
        return None
    return "PASSIVE"


def limit_threads_per_rank() -> None:
    """Set OMP_NUM_THREADS for this rank when several share a node, and OMP_WAIT_POLICY where
    its cores may be shared; a variable already set is left as it is."""
    per_node = ranks_per_node_hint()
    if "OMP_NUM_THREADS" not in os.environ and per_node > 1:
        os.environ["OMP_NUM_THREADS"] = str(threads_per_rank(per_node))
    policy = wait_policy(per_node)
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy
