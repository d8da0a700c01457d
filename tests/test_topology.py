"""Launcher detection from each launcher's own variables (the real launches: test_distributed)."""

import os
import socket

import pytest

from hpcue.distributed.threads import ranks_per_node_hint
from hpcue.distributed.topology import TopologyError, detect

CLEAN = ("SLURM_", "PMI_", "OMPI_", "JSM_", "LSB_", "MPI_LOCAL", "PMIX_")
TORCH = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
         "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(CLEAN) or key in TORCH:
            monkeypatch.delenv(key)
    return monkeypatch


def test_plain_process_is_local(env):
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.rank, topo.backend, topo.device) == (
        "local", 1, 0, "gloo", "cpu")
    assert topo.summary() == ("launcher=local world_size=1 nodes=1 ranks_per_node=1 "
                              "backend=gloo device=cpu")


def test_slurm(env):
    for k, v in dict(SLURM_NTASKS="8", SLURM_PROCID="5", SLURM_LOCALID="1", SLURM_NODEID="2",
                     SLURM_NNODES="4", SLURM_TASKS_PER_NODE="2(x4)", SLURM_JOB_ID="4242",
                     SLURM_JOB_NAME="uc", SLURM_NODELIST="n[1-4]").items():
        env.setenv(k, v)
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.rank, topo.local_rank, topo.node_rank,
            topo.num_nodes, topo.ranks_per_node) == ("slurm", 8, 5, 1, 2, 4, 2)
    assert topo.env.main_port == 15000 + 4242  # from the job id: no fixed port
    assert ranks_per_node_hint() == 2


def test_slurm_uneven_tasks(env):
    for k, v in dict(SLURM_NTASKS="3", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
                     SLURM_NNODES="2", SLURM_TASKS_PER_NODE="2,1", SLURM_JOB_NAME="uc").items():
        env.setenv(k, v)
    with pytest.raises(TopologyError, match="same number of tasks on every node"):
        detect()


def test_jsrun_variables(env, tmp_path):
    rankfile = tmp_path / "rankfile"
    rankfile.write_text(f"batch1\n{socket.gethostname()}\n{socket.gethostname()}\nnode2\nnode2\n")
    for k, v in dict(LSB_JOBID="123456", LSB_DJOB_RANKFILE=str(rankfile),
                     JSM_NAMESPACE_RANK="1", JSM_NAMESPACE_LOCAL_RANK="1",
                     JSM_NAMESPACE_SIZE="4", OMPI_COMM_WORLD_SIZE="4",
                     OMPI_COMM_WORLD_RANK="1", OMPI_COMM_WORLD_LOCAL_RANK="1").items():
        env.setenv(k, v)
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.num_nodes, topo.ranks_per_node,
            topo.node_rank) == ("lsf", 4, 2, 2, 0)
    assert topo.env.main_port == 123456 % 1000 + 10000
    assert topo.env.main_address == socket.gethostname()
    env.setenv("OMPI_COMM_WORLD_SIZE", "6")
    with pytest.raises(TopologyError, match="JSM_NAMESPACE_SIZE=4 but OMPI_COMM_WORLD_SIZE=6"):
        detect()


def test_torchrun_variables(env):
    for k, v in dict(RANK="3", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
                     GROUP_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29511",
                     TORCHELASTIC_RUN_ID="x").items():
        env.setenv(k, v)
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.rank, topo.node_rank, topo.num_nodes) == (
        "torchrun", 4, 3, 1, 2)


def test_explicit_launcher_and_bad_values(env):
    assert detect("local").launcher == "local"
    with pytest.raises(TopologyError, match="unknown launcher 'pbs'"):
        detect("pbs")
    env.setenv("SLURM_NTASKS", "two")
    with pytest.raises(TopologyError, match="SLURM_NTASKS is 'two'"):
        detect("slurm")
