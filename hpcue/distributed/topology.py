"""This rank's topology and the one process group every stage shares.

The launcher classes (``hpcue.distributed.launchers``, tried in Lightning's own order: torchrun,
Slurm, LSF, MPI, then one local process) give the counts (world size, nodes, ranks per node);
they always come from the launcher, never from the user, and are cross-checked before any
collective starts, because a mismatch under jsrun mis-shards or hangs silently. One process
that is a task of a larger srun step is refused: its siblings would each run the whole job on
the same run directory.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import ClusterEnvironment

from hpcue.distributed import collectives
from hpcue.distributed.launchers import TopologyError, read_launcher
from hpcue.distributed.launchers.local import Local
from hpcue.distributed.launchers.slurm import step_task, step_tasks


@dataclass(frozen=True)
class Topology:
    launcher: str
    world_size: int
    rank: int
    local_rank: int
    node_rank: int
    num_nodes: int
    ranks_per_node: int
    backend: str
    device: str
    env: ClusterEnvironment | None = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def summary(self) -> str:
        return (f"launcher={self.launcher} world_size={self.world_size} nodes={self.num_nodes} "
                f"ranks_per_node={self.ranks_per_node} backend={self.backend} "
                f"device={self.device}")


def _device(accelerator: str, local_rank: int, ranks_per_node: int) -> str:
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        return "cpu"
    visible = torch.cuda.device_count()
    if visible == 0:
        raise TopologyError("runtime.accelerator=gpu but no CUDA device is visible to this rank")
    if visible == 1:  # jsrun -g1 / srun --gpus-per-task=1: each rank sees its own GPU
        return "cuda:0"
    if visible < ranks_per_node:
        raise TopologyError(f"{ranks_per_node} ranks per node but {visible} GPUs visible to "
                            f"each: give each rank one GPU or run at most {visible} per node")
    return f"cuda:{local_rank}"


def detect(launcher: str = "auto", accelerator: str = "auto") -> Topology:
    """This rank's topology from the named (or detected) launcher, cross-checked."""
    found = read_launcher(launcher)
    name, world, rank, local_rank = found.name, found.world_size, found.rank, found.local_rank
    num_nodes, per_node = found.num_nodes, found.ranks_per_node
    if world != num_nodes * per_node:
        raise TopologyError(f"{name}: world size {world} != {num_nodes} nodes x {per_node} "
                            f"ranks per node")
    if not 0 <= rank < world or not 0 <= local_rank < per_node:
        raise TopologyError(f"{name}: rank {rank} (local {local_rank}) outside world size "
                            f"{world} ({per_node} per node)")
    if world == 1:
        refuse_one_of_many(name)
    device = _device(accelerator, local_rank, per_node)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    try:  # Lightning's environments read their own variables (address, port) and may refuse
        env = found.cluster_environment()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise TopologyError(f"{name}: {exc}") from None
    return Topology(name, world, rank, local_rank, found.node_rank, num_nodes, per_node,
                    backend, device, env)


def refuse_one_of_many(name: str) -> None:
    """One process in an srun step of several tasks is an error, never a silent single run:
    every task would run the whole job alone, racing on one run directory."""
    if not step_task():
        return
    tasks = step_tasks()
    if tasks > 1:
        var = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in os.environ else "SLURM_NTASKS"
        raise TopologyError(
            f"launcher {name} gives world size 1, but this process is task "
            f"SLURM_PROCID={os.environ['SLURM_PROCID']} of an srun step of {var}={tasks} "
            f"tasks: each would run the whole job alone. Let hpcue detect Slurm (drop "
            f"--launcher {name} / runtime.launcher: {name}), or start one task (srun -n 1)")


def init_process_group(topo: Topology, timeout_s: float, setup_timeout_s: float) -> None:
    """One process group for every stage; Lightning's DDP finds it and reuses it.

    Address and port come from the job (Slurm job id, LSB_JOBID, torchrun's rendezvous, or
    rank 0's free port broadcast over MPI), so two jobs on one node do not collide.
    """
    if not topo.distributed or dist.is_initialized():
        return
    env = topo.env
    assert env is not None
    if topo.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(topo.device))
    dist.init_process_group(
        topo.backend, init_method=f"tcp://{env.main_address}:{env.main_port}",
        rank=topo.rank, world_size=topo.world_size, timeout=timedelta(seconds=timeout_s))
    collectives.init_long_wait_group(setup_timeout_s)
    check_distinct_gpus(topo)


def gpu_identity(props) -> str:
    """What tells two GPUs of one host apart: the UUID, or where a build has none (ROCm before
    6.0) the PCI address; never an AttributeError on every rank."""
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        return str(uuid)
    pci = [getattr(props, f, None) for f in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if all(v is not None for v in pci):
        return "pci:{:04x}:{:02x}:{:02x}".format(*pci)
    # unique per process: ranks that cannot be told apart are not compared
    return f"{props.name} (no UUID or PCI address) pid {os.getpid()}"


def check_distinct_gpus(topo: Topology) -> None:
    """Two ranks on one GPU (one visible device, not isolated per rank) is a clear error.

    A rank that sees a single GPU cannot tell from its own environment whether its neighbours
    see the same one (srun --gpus-per-task isolates with cgroups, leaving "0" everywhere), so
    the ranks compare GPU UUIDs per host, over gloo, before any NCCL collective.
    """
    if not (topo.distributed and topo.device.startswith("cuda")):
        return
    mine = (socket.gethostname(), gpu_identity(torch.cuda.get_device_properties(topo.device)))
    seen: list = [None] * topo.world_size
    dist.all_gather_object(seen, mine, group=collectives.long_wait_group())
    shared = sorted({r for r, key in enumerate(seen) if seen.count(key) > 1})
    if shared:
        raise TopologyError(f"ranks {shared} share one GPU ({mine[1]} on {mine[0]}): give each "
                            f"rank its own GPU (jsrun -g1, srun --gpus-per-task=1, or "
                            f"CUDA_VISIBLE_DEVICES per rank) or start fewer ranks per node")


_ACTIVE: Topology | None = None


def activate(topo: Topology) -> None:
    """Make ``topo`` the process's topology (the CLI does this once, before any stage)."""
    global _ACTIVE
    _ACTIVE = topo


def current() -> Topology:
    """The active topology; one local process when nothing was activated (tests, notebooks)."""
    return _ACTIVE if _ACTIVE is not None else detect(Local.name, "cpu")
