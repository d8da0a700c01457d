"""``hpcue doctor``: what this machine and launcher give hpcue, checked in about two minutes.

The first thing to run wherever a GPU (or a new cluster) is at hand: versions, the GPUs this
rank sees, the launcher's topology, the surrogate's weights, an all-reduce over every rank
(gloo, and NCCL on GPUs), then every stage once at tiny sizes on the embedded digits, with the
config's runtime settings (accelerator, precision, micro batch). One line per check; rank 0
prints, other ranks print only their failures; the exit status is 1 when any check failed.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpcue import __version__
from hpcue.config import RunConfig, load_config
from hpcue.distributed import collectives
from hpcue.distributed.topology import Topology
from hpcue.stages.rundir import STAGES

#: every stage once, in seconds: the smoke run's sizes (the data set is always the digits)
SMOKE = ["data.dataset=digits", "data.image_size=16", "data.num_shards=2",
         "surrogate.arch=small_cnn", "surrogate.weights=null", "surrogate.pretrain_epochs=1",
         "surrogate.pretraining=self_supervised",
         "cluster.n_init=1", "cluster.shared=null", "train.epochs=1",
         "train.generator_width=4", "train.generator_blocks=1", "victim.epochs=1",
         "victim.seeds=1", "victim.baselines=[random]", "victim.defenses=[]"]


DIGITS_TRAIN = 1347  # training images of the digits at the default test fraction


@dataclass
class Check:
    name: str
    ok: bool | None  # None: information only
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[self.ok]
        return f"{mark}  {self.name}: {self.detail}"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(topo: Topology | None) -> list[Check]:
    """The stack a bug report needs; the MPI library is loaded only under the MPI launcher."""
    import h5py
    import lightning
    import torch

    accel = (f"CUDA {torch.version.cuda}" if torch.version.cuda
             else f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None)
             else "CPU only")
    nccl = "-"
    if torch.cuda.is_available() and hasattr(torch.cuda, "nccl"):
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as exc:  # a build without NCCL (or RCCL) raises here
            nccl = f"unavailable ({exc})"
    mpi = f"mpi4py {_version('mpi4py')}, mpich wheel {_version('mpich')}"
    if topo is not None and topo.launcher == "mpi":
        from mpi4py import MPI

        mpi += f"; library: {MPI.Get_library_version().splitlines()[0].strip()}"
    return [
        Check("hpcue", None, f"{__version__} on Python {platform.python_version()} "
                             f"({sys.executable})"),
        Check("torch", None, f"{torch.__version__} ({accel}; NCCL {nccl}), lightning "
                             f"{lightning.__version__}"),
        Check("HDF5", None, f"h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}"),
        Check("MPI", None, mpi),
    ]


def gpus() -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("GPUs", None, "none visible (CPU runs only)")
    names = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        names.append(f"{i}: {p.name} {p.total_memory / 2**30:.0f} GiB")
    return Check("GPUs", True, f"{len(names)} visible: {'; '.join(names)}")


def speed_options() -> Check:
    """The speed options this command resolved (training/speed.py), so a GPU node shows which
    are on before a run spends its hours."""
    from hpcue.training import speed

    s = speed.current()
    parts = ", ".join(s.compile) or "nothing"
    return Check("speed", None, f"channels_last {'on' if s.channels_last else 'off'}, compile "
                                f"{parts}, fused optimizer {'on' if s.fused_optimizer else 'off'}"
                                f", pinned pages {'on' if s.pin_memory else 'off'} (runtime.*; "
                                f"benchmarks/gpu_throughput.py measures them)")


def weights(cfg: RunConfig) -> Check:
    """The configured surrogate's weights (the smoke run trains its own small CNN)."""
    from hpcue.models.surrogate import require_weights

    s = cfg.surrogate
    if s.arch == "small_cnn" and s.weights is None:
        return Check("surrogate weights", None, "small_cnn: trained by the cluster stage")
    try:
        path = require_weights(s.arch, s.weights)
    except Exception as exc:
        return Check("surrogate weights", False, str(exc))
    return Check("surrogate weights", True, f"{s.arch}: {path}")


def all_reduce(topo: Topology) -> list[Check]:
    """Every rank adds rank + 1, on each group the stages use: gloo (setup waits) and the
    training backend (NCCL on GPUs)."""
    import torch

    out = []
    expected = topo.world_size * (topo.world_size + 1) // 2
    groups = [(topo.backend, None, topo.device)]
    if collectives.long_wait_group() is not None:
        groups.append(("gloo (setup group)", collectives.long_wait_group(), "cpu"))
    for name, group, device in groups:
        t0 = time.perf_counter()
        value = torch.tensor([float(topo.rank + 1)], device=device)
        torch.distributed.all_reduce(value, group=group)
        got = int(value.item())
        out.append(Check(f"all-reduce {name}", got == expected,
                         f"sum {got} over {topo.world_size} ranks (expected {expected}), "
                         f"{(time.perf_counter() - t0) * 1e3:.1f} ms"))
    return out


def smoke(cfg: RunConfig, where: Path, world_size: int) -> list[Check]:
    """Every stage once at tiny sizes, with the config's runtime settings; stops at a failure.
    32 images a rank a step (8 on worlds too large for the digits), so the world size always
    divides the global batch."""
    from hpcue.pipeline import run_stage

    batch = (32 if 32 * world_size <= DIGITS_TRAIN else 8) * world_size
    tiny = load_config(None, [*SMOKE, f"train.global_batch_size={batch}",
                              f"victim.global_batch_size={batch}"])
    tiny = tiny.model_copy(update={"runtime": cfg.runtime, "name": "doctor"})

    def make_dir() -> str:
        where.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="doctor-", dir=where)

    out = Path(collectives.on_main(make_dir, f"creating a folder in {where}")) / "run"
    checks = []
    for stage in STAGES:
        t0 = time.perf_counter()
        try:
            run_stage(stage, tiny, out)
        except Exception as exc:
            checks.append(Check(f"stage {stage}", False, f"{type(exc).__name__}: {exc}"))
            return checks
        checks.append(Check(f"stage {stage}", True, f"{time.perf_counter() - t0:.1f} s"))
    from hpcue.io import read_json

    results = read_json(out / "results.json")
    checks.append(Check("results", True, f"clean {results['clean_test_acc']:.3f}, unlearnable "
                                         f"{results['unlearnable_test_acc']:.3f} after one "
                                         f"epoch (not a measurement)"))
    collectives.barrier()
    if collectives.is_main():
        shutil.rmtree(out.parent, ignore_errors=True)
    return checks


def _guarded(name: str, work: Callable[[], list[Check]]) -> list[Check]:
    try:
        return work()
    except Exception as exc:  # a check that cannot run is a failed check, named
        return [Check(name, False, f"{type(exc).__name__}: {exc}")]


def doctor(cfg: RunConfig, where: Path, say: Callable[[str], None] = print) -> int:
    """Run every check, printing each line as it finishes; 1 if any failed."""
    failed = False

    def report(checks: list[Check]) -> None:
        nonlocal failed
        for check in checks:
            failed |= check.ok is False
            if collectives.is_main():
                say(check.line())
            elif check.ok is False:
                say(f"rank {collectives.rank()}: {check.line()}")

    from hpcue.pipeline import start

    topo: Topology | None = None
    try:
        topo = start(cfg, say=False)
        report([Check("launcher", True, f"{topo.summary()} rank={topo.rank}")])
    except Exception as exc:
        report([Check("launcher", False, f"{type(exc).__name__}: {exc}")])
    report(_guarded("versions", lambda: versions(topo)))
    report(_guarded("GPUs", lambda: [gpus()]))
    report([speed_options()])
    report([weights(cfg)])
    if topo is None:
        return 1
    if topo.distributed:
        report(_guarded("all-reduce", lambda: all_reduce(topo)))
    report(_guarded("stages", lambda: smoke(cfg, where, topo.world_size)))
    if collectives.is_main():
        say("doctor: " + ("FAILED (see the FAIL lines)" if failed else "all checks passed"))
    return 1 if failed else 0
