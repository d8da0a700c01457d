"""Launcher detection and the one process group every stage shares.

Built on Lightning's cluster environments, tried in Lightning's own order (torchrun, Slurm, LSF,
MPI, then one local process). The counts (world size, nodes, ranks per node) always come from
the launcher, never from the user, and are cross-checked before any collective starts, because
a mismatch under jsrun mis-shards or hangs silently.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from hpcue.dist import collectives
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

LAUNCHERS = ("auto", "local", "torchrun", "slurm", "lsf", "mpi")
# set by mpiexec (MPICH/hydra, Open MPI, Intel MPI): only then is mpi4py imported, since
# importing mpi4py.MPI initialises MPI in the process
_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


class TopologyError(RuntimeError):
    """The launcher's counts do not agree: one clear error before any collective starts."""


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


def _int_env(name: str) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip().lstrip("-").isdigit():
        raise TopologyError(f"environment variable {name} is {value!r}, expected an integer")
    return int(value)


def _slurm_tasks_per_node() -> int:
    """SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE ('2(x3)' or '2,1': uneven is an error)."""
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        return _int_env("SLURM_NTASKS_PER_NODE")
    raw = os.environ.get("SLURM_TASKS_PER_NODE", "")
    counts = {int(m.group(1)) for m in re.finditer(r"(\d+)(?:\(x\d+\))?", raw)}
    if len(counts) != 1:
        raise TopologyError(f"SLURM_TASKS_PER_NODE={raw!r}: hpcue needs the same number of "
                            f"tasks on every node (use --ntasks-per-node)")
    return counts.pop()


def _lsf_hosts() -> list[str]:
    """Compute hosts of the jsrun rankfile: every line after the first (the launch node)."""
    path = os.environ.get("LSB_DJOB_RANKFILE", "")
    try:
        with open(path) as fh:
            lines = [line.strip() for line in fh if line.strip()]
    except OSError as exc:
        raise TopologyError(f"LSB_DJOB_RANKFILE={path!r} cannot be read: {exc}") from None
    hosts = list(dict.fromkeys(lines[1:]))
    if not hosts:
        raise TopologyError(f"{path}: rankfile lists no compute hosts after its first line")
    return hosts


def _mpi_present() -> bool:
    return any(int(os.environ.get(v, "1") or 1) > 1 for v in _MPI_SIZE_VARS
               if os.environ.get(v, "").isdigit())


def _counts(launcher: str) -> tuple[ClusterEnvironment, int, int, int, int, int, int]:
    """(env, world, rank, local_rank, node_rank, num_nodes, ranks_per_node) from the launcher."""
    if launcher == "torchrun":
        env = TorchElasticEnvironment()
        world, local_world = _int_env("WORLD_SIZE"), _int_env("LOCAL_WORLD_SIZE")
        return (env, world, _int_env("RANK"), _int_env("LOCAL_RANK"), _int_env("GROUP_RANK"),
                max(1, world // local_world), local_world)
    if launcher == "slurm":
        counts = (_int_env("SLURM_NTASKS"), _int_env("SLURM_PROCID"), _int_env("SLURM_LOCALID"),
                  _int_env("SLURM_NODEID"), _int_env("SLURM_NNODES" if "SLURM_NNODES" in
                                                     os.environ else "SLURM_JOB_NUM_NODES"),
                  _slurm_tasks_per_node())
        # Lightning insists on --ntasks-per-node; an even --ntasks layout was checked above
        os.environ.setdefault("SLURM_NTASKS_PER_NODE", str(counts[-1]))
        return (SLURMEnvironment(auto_requeue=False), *counts)
    if launcher == "lsf":
        env = LSFEnvironment()
        world = _int_env("JSM_NAMESPACE_SIZE")
        hosts = _lsf_hosts()
        if "OMPI_COMM_WORLD_SIZE" in os.environ and _int_env("OMPI_COMM_WORLD_SIZE") != world:
            raise TopologyError(f"JSM_NAMESPACE_SIZE={world} but OMPI_COMM_WORLD_SIZE="
                                f"{os.environ['OMPI_COMM_WORLD_SIZE']}")
        if world % len(hosts):
            raise TopologyError(
                f"JSM_NAMESPACE_SIZE={world} ranks do not divide over the {len(hosts)} hosts of "
                f"{os.environ['LSB_DJOB_RANKFILE']} ({', '.join(hosts)}): check jsrun -n/-r")
        node = hosts.index(socket.gethostname()) if socket.gethostname() in hosts else (
            _int_env("JSM_NAMESPACE_RANK") // (world // len(hosts)))
        return (env, world, _int_env("JSM_NAMESPACE_RANK"), _int_env("JSM_NAMESPACE_LOCAL_RANK"),
                node, len(hosts), world // len(hosts))
    if launcher == "mpi":
        env = MPIEnvironment()
        from mpi4py import MPI

        world = MPI.COMM_WORLD.Get_size()
        local = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
        per_node = local.Get_size()
        sizes = MPI.COMM_WORLD.allgather(per_node)
        if len(set(sizes)) != 1:
            raise TopologyError(f"mpiexec placed {sorted(set(sizes))} ranks on different nodes; "
                                f"hpcue needs the same number of ranks on every node")
        rank = MPI.COMM_WORLD.Get_rank()
        return env, world, rank, local.Get_rank(), rank // per_node, world // per_node, per_node
    return LightningEnvironment(), 1, 0, 0, 0, 1, 1


def detect_launcher() -> str:
    """Lightning's order: TorchElastic, SLURM, LSF, MPI, then a single local process."""
    if TorchElasticEnvironment.detect():
        return "torchrun"
    if SLURMEnvironment.detect() and "SLURM_PROCID" in os.environ:
        return "slurm"
    if LSFEnvironment.detect():
        return "lsf"
    if _mpi_present() and MPIEnvironment.detect():
        return "mpi"
    return "local"


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
    if launcher not in LAUNCHERS:
        raise TopologyError(f"unknown launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    name = detect_launcher() if launcher == "auto" else launcher
    env, world, rank, local_rank, node_rank, num_nodes, per_node = _counts(name)
    if world != num_nodes * per_node:
        raise TopologyError(f"{name}: world size {world} != {num_nodes} nodes x {per_node} "
                            f"ranks per node")
    if not 0 <= rank < world or not 0 <= local_rank < per_node:
        raise TopologyError(f"{name}: rank {rank} (local {local_rank}) outside world size "
                            f"{world} ({per_node} per node)")
    device = _device(accelerator, local_rank, per_node)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    return Topology(name, world, rank, local_rank, node_rank, num_nodes, per_node, backend,
                    device, env)


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


def check_distinct_gpus(topo: Topology) -> None:
    """Two ranks on one GPU (one visible device, not isolated per rank) is a clear error.

    A rank that sees a single GPU cannot tell from its own environment whether its neighbours
    see the same one (srun --gpus-per-task isolates with cgroups, leaving "0" everywhere), so
    the ranks compare GPU UUIDs per host, over gloo, before any NCCL collective.
    """
    if not (topo.distributed and topo.device.startswith("cuda")):
        return
    mine = (socket.gethostname(), str(torch.cuda.get_device_properties(topo.device).uuid))
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
    return _ACTIVE if _ACTIVE is not None else detect("local", "cpu")
