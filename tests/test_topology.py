"""Launcher detection from each launcher's own variables (the real launches: test_distributed,
test_slurm), and the OpenMP threads each rank gets."""

import os
import socket
import sys

import pytest

from hpcue.distributed.launchers import detect_launcher
from hpcue.distributed.threads import WAIT_VARS, limit_threads_per_rank, ranks_per_node_hint
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
                     SLURM_JOB_NAME="uc", SLURM_NODELIST="n[1-4]", SLURM_STEP_ID="0").items():
        env.setenv(k, v)
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.rank, topo.local_rank, topo.node_rank,
            topo.num_nodes, topo.ranks_per_node) == ("slurm", 8, 5, 1, 2, 4, 2)
    assert topo.env.main_port == 15000 + 4242  # from the job id: no fixed port
    assert ranks_per_node_hint() == 2


def test_slurm_uneven_tasks(env):
    for k, v in dict(SLURM_NTASKS="3", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
                     SLURM_NNODES="2", SLURM_TASKS_PER_NODE="2,1", SLURM_JOB_NAME="uc",
                     SLURM_STEP_ID="0").items():
        env.setenv(k, v)
    with pytest.raises(TopologyError, match="same number of tasks on every node"):
        detect()


def _step(env, tasks: int, procid: int, job_name: str = "uc", **extra: str) -> None:
    """The variables srun gives each task of a one-node step (measured on Slurm 22.05)."""
    for k, v in dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME=job_name, SLURM_NODELIST="n1",
                     SLURM_NTASKS=str(tasks), SLURM_NPROCS=str(tasks), SLURM_PROCID=str(procid),
                     SLURM_LOCALID=str(procid), SLURM_NODEID="0", SLURM_NNODES="1",
                     SLURM_JOB_NUM_NODES="1", SLURM_TASKS_PER_NODE=str(tasks),
                     SLURM_STEP_ID="0", SLURM_STEPID="0", SLURM_STEP_NUM_TASKS=str(tasks),
                     SLURM_STEP_NUM_NODES="1", SLURM_STEP_TASKS_PER_NODE=str(tasks),
                     **extra).items():
        env.setenv(k, v)


@pytest.mark.parametrize("job_name", ["bash", "interactive", "uc"])
def test_slurm_step_whatever_the_job_name(env, job_name):
    # salloc names its job "interactive", `srun -n 2 bash ...` names it "bash": Lightning's
    # detection refuses both, and each task then ran the whole job alone
    _step(env, 2, 1, job_name)
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.rank, topo.local_rank, topo.num_nodes,
            topo.ranks_per_node) == ("slurm", 2, 1, 1, 1, 2)
    assert topo.env.main_port == 15000 + 4242
    assert ranks_per_node_hint() == 2


def test_one_process_in_a_step_of_two_is_refused(env):
    _step(env, 2, 1, "interactive")
    with pytest.raises(TopologyError, match=r"launcher local gives world size 1, but this process "
                       r"is task SLURM_PROCID=1 of an srun step of SLURM_STEP_NUM_TASKS=2 tasks"):
        detect("local")
    env.delenv("SLURM_STEP_NUM_TASKS")  # older Slurm: the step's SLURM_NTASKS
    assert detect().world_size == 2
    with pytest.raises(TopologyError, match="srun step of SLURM_NTASKS=2 tasks"):
        detect("local")


def test_torchrun_of_one_in_each_task_of_a_step_is_refused(env):
    # srun -n 2 torchrun --nproc-per-node 1 --standalone: two worlds of one on one run directory
    _step(env, 2, 0)
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                     GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29511",
                     TORCHELASTIC_RUN_ID="x").items():
        env.setenv(k, v)
    with pytest.raises(TopologyError, match="launcher torchrun gives world size 1.*"
                                            "SLURM_STEP_NUM_TASKS=2"):
        detect()


def test_batch_script_shell_is_one_process(env):
    # the batch script's own shell: SLURM_PROCID=0 and the job's 2 tasks, but no step id
    for k, v in dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="job.sbatch", SLURM_NTASKS="2",
                     SLURM_NTASKS_PER_NODE="2", SLURM_TASKS_PER_NODE="2", SLURM_PROCID="0",
                     SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NNODES="1").items():
        env.setenv(k, v)
    topo = detect()
    assert (topo.launcher, topo.world_size) == ("local", 1)
    assert ranks_per_node_hint() == 1
    with pytest.raises(TopologyError, match="was not started by srun: run it under srun"):
        detect("slurm")


def test_one_task_step_in_a_two_task_job(env):
    # `srun -n 1` in an --ntasks-per-node=2 job keeps the job's SLURM_NTASKS_PER_NODE=2
    _step(env, 1, 0, SLURM_NTASKS_PER_NODE="2")
    topo = detect()
    assert (topo.launcher, topo.world_size, topo.ranks_per_node) == ("slurm", 1, 1)
    assert ranks_per_node_hint() == 1


def test_mpiexec_inside_an_allocation_is_mpi(env):
    # MPICH's mpiexec in salloc starts one proxy task per node with srun: its ranks carry that
    # one-task step's variables, and PMI_SIZE=2 (measured)
    _step(env, 1, 0, "bash", PMI_SIZE="2", PMI_RANK="1", MPI_LOCALNRANKS="2")
    assert detect_launcher() == "mpi"
    assert ranks_per_node_hint() == 2
    # srun --mpi=pmi2 starts the tasks itself: PMI_SIZE equals the step's tasks
    _step(env, 2, 1, "bash", PMI_SIZE="2", PMI_RANK="1")
    env.delenv("MPI_LOCALNRANKS")
    assert detect_launcher() == "slurm"


def _fake_mpi4py(env, tmp_path, world: int | None) -> None:
    """mpi4py as a plain install has it (no library: its import raises), or a fake world."""
    pkg = tmp_path / "fake" / "mpi4py"
    pkg.mkdir(parents=True)
    if world is None:
        (pkg / "__init__.py").write_text('raise RuntimeError("cannot load MPI library")\n')
    else:
        (pkg / "__init__.py").write_text("")
        (pkg / "MPI.py").write_text(
            "class _World:\n"
            f"    def Get_size(self): return {world}\n"
            "    def Get_rank(self): return 0\n"
            "COMM_WORLD = _World()\n"
            "def Get_library_version(): return 'Fake MPI 1.0\\n'\n")
    env.syspath_prepend(str(tmp_path / "fake"))
    for name in [m for m in sys.modules if m == "mpi4py" or m.startswith("mpi4py.")]:
        env.delitem(sys.modules, name)


def test_mpi_launcher_without_a_library(env, tmp_path):
    _fake_mpi4py(env, tmp_path, None)
    with pytest.raises(TopologyError, match=r"^--launcher mpi needs an MPI library: pip install "
                       r"'hpcue\[mpi\]' or load your site's MPI module \(mpi4py: cannot load"):
        detect("mpi")
    env.setenv("PMI_SIZE", "2")
    with pytest.raises(TopologyError, match=r"mpiexec started this process \(PMI_SIZE=2\)"):
        detect()


def test_mpiexec_whose_library_sees_one_process(env, tmp_path):
    # an mpiexec of another MPI than mpi4py's: each rank is a world of one, never a silent run
    _fake_mpi4py(env, tmp_path, 1)
    env.setenv("PMI_SIZE", "2")
    with pytest.raises(TopologyError, match=r"mpiexec started 2 processes \(PMI_SIZE=2\) but "
                       r"mpi4py's MPI library sees one.*\(Fake MPI 1.0\)"):
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
    env.setenv("SLURM_PROCID", "0")
    env.setenv("SLURM_STEP_ID", "0")
    with pytest.raises(TopologyError, match="SLURM_NTASKS is 'two'"):
        detect("slurm")


@pytest.fixture
def cpus(env):
    """This process's affinity and the node's CPU count, as a launcher would leave them."""
    for var in ("OMP_NUM_THREADS", *WAIT_VARS):
        env.setenv(var, "")  # restored (or removed) after the test, as it was
        env.delenv(var)

    def set_cpus(mine: int, node: int) -> None:
        env.setattr(os, "sched_getaffinity", lambda pid: set(range(mine)))
        env.setattr(os, "cpu_count", lambda: node)
    return set_cpus


def _threads() -> str | None:
    limit_threads_per_rank()
    return os.environ.get("OMP_NUM_THREADS")


def test_threads_of_a_rank_bound_to_its_own_cores(env, cpus):
    # Frontier: srun -c7, 8 tasks a node of 128 CPUs; each task's affinity is its 7 cores
    _step(env, 8, 3)
    cpus(7, 128)
    assert _threads() == "7"


def test_threads_of_ranks_sharing_the_node(env, cpus):
    # mpiexec without binding: every rank sees the whole node and takes its share
    env.setenv("MPI_LOCALNRANKS", "8")
    cpus(64, 64)
    assert _threads() == "8"


def test_threads_never_below_one(env, cpus):
    _step(env, 8, 0)
    cpus(4, 4)
    assert _threads() == "1"


def test_threads_of_one_set_too_large_to_be_per_rank(env, cpus):
    # a job's cgroup of 100 CPUs on a 128-CPU node, 4 unbound ranks: 4 x 100 cannot be disjoint
    env.setenv("LOCAL_WORLD_SIZE", "4")
    cpus(100, 128)
    assert _threads() == "25"


def test_threads_set_by_the_user_win(env, cpus):
    _step(env, 8, 0)
    cpus(7, 128)
    env.setenv("OMP_NUM_THREADS", "3")
    assert _threads() == "3"


def test_threads_left_alone_for_one_process(env, cpus):
    # one rank a node, or the batch script's own shell (its job has 2 tasks, but it is one)
    cpus(7, 128)
    assert _threads() is None
    for k, v in dict(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_PROCID="0").items():
        env.setenv(k, v)
    assert _threads() is None


def _wait() -> str | None:
    limit_threads_per_rank()
    return os.environ.get("OMP_WAIT_POLICY")


def test_idle_threads_sleep_on_cores_that_may_be_shared(env, cpus):
    # a laptop or workstation: one process, affinity of the whole machine, others may run there
    cpus(2, 2)
    assert (_wait(), _threads()) == ("PASSIVE", None)
    # mpiexec without binding: every rank sees the whole node
    env.setenv("MPI_LOCALNRANKS", "8")
    env.delenv("OMP_WAIT_POLICY")
    cpus(64, 64)
    assert (_wait(), _threads()) == ("PASSIVE", "8")


def test_idle_threads_sleep_in_a_shared_set_too_large_to_be_per_rank(env, cpus):
    env.setenv("LOCAL_WORLD_SIZE", "4")
    cpus(100, 128)
    assert _wait() == "PASSIVE"


def test_wait_policy_left_to_the_runtime_on_cores_of_the_rank_own(env, cpus):
    # srun -c7: the launcher bound the rank to its own cores; spinning there costs nobody
    _step(env, 8, 3)
    cpus(7, 128)
    assert (_wait(), _threads()) == (None, "7")
    assert "GOMP_SPINCOUNT" not in os.environ and "KMP_BLOCKTIME" not in os.environ


@pytest.mark.parametrize("var,value", [("OMP_WAIT_POLICY", "ACTIVE"),
                                       ("GOMP_SPINCOUNT", "300000"), ("KMP_BLOCKTIME", "200")])
def test_wait_policy_set_by_the_user_wins(env, cpus, var, value):
    cpus(2, 2)
    env.setenv(var, value)
    limit_threads_per_rank()
    assert os.environ[var] == value
    assert all(os.environ.get(other) is None for other in WAIT_VARS if other != var)


def test_wait_policy_does_not_touch_the_thread_count(env, cpus):
    cpus(2, 2)
    env.setenv("OMP_NUM_THREADS", "1")
    assert (_wait(), _threads()) == ("PASSIVE", "1")


def test_gpu_identity_without_a_uuid_falls_back_to_the_pci_address():
    from types import SimpleNamespace

    from hpcue.distributed.topology import gpu_identity

    assert gpu_identity(SimpleNamespace(uuid="GPU-1234", name="A100")) == "GPU-1234"
    rocm5 = SimpleNamespace(name="MI250X", pci_domain_id=0, pci_bus_id=0xC1, pci_device_id=0)
    assert gpu_identity(rocm5) == "pci:0000:c1:00"
    bare = gpu_identity(SimpleNamespace(name="X"))
    assert bare == f"X (no UUID or PCI address) pid {os.getpid()}"  # never equal another rank's
