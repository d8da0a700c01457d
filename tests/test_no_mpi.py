"""A plain install (no ``[mpi]`` extra, no site MPI module): mpi4py is installed but has no MPI
library, and importing it raises ``RuntimeError("cannot load MPI library")``. Every one-process
command runs without it; the MPI launcher chosen without it is one line, exit 2.

The fake mpi4py below records every attempt to import it before it raises, so an import that
something caught and swallowed is seen too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, hpcue, tiny_sets
from tests.test_distributed import _env

FAKE = ('import os\n'
        'with open(os.environ["FAKE_MPI4PY_LOG"], "a") as log:\n'
        '    log.write(__name__ + "\\n")\n'
        'raise RuntimeError("cannot load MPI library")\n')


@pytest.fixture
def no_mpi(tmp_path) -> tuple[dict, Path]:
    """The environment of a plain install: mpi4py (and mpi4py.MPI) fail to load; and the log."""
    pkg = tmp_path / "fake" / "mpi4py"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE)
    (pkg / "MPI.py").write_text(FAKE)
    log = tmp_path / "mpi4py-imports.log"
    path = [str(tmp_path / "fake"), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    return _env(PYTHONPATH=os.pathsep.join(path), FAKE_MPI4PY_LOG=str(log)), log


def test_the_fake_is_what_mpi4py_does_without_a_library(no_mpi):
    env, log = no_mpi
    proc = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], env=env,
                          capture_output=True, text=True)
    assert "RuntimeError: cannot load MPI library" in proc.stderr
    assert log.read_text() == "mpi4py\n"


def test_one_process_commands_need_no_mpi_library(no_mpi, tmp_path):
    env, log = no_mpi
    out = tmp_path / "runs" / "tiny"
    proc = hpcue("run", "--out", str(out), *tiny_sets(), env=env)
    assert "launcher=local world_size=1" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 1 and results["launcher"] == "local"
    hpcue("evaluate", "--out", str(out), "--force", env=env)  # a stage command on its own
    hpcue("data", "verify", str(out / "data"), env=env)
    hpcue("report", str(tmp_path / "runs"), env=env)
    assert (tmp_path / "runs" / "report" / "report.csv").is_file()
    assert not log.exists(), f"mpi4py was imported: {log.read_text()}"


@pytest.mark.parametrize("started_by", ["--launcher", "mpiexec"])
def test_mpi_launcher_without_a_library_is_one_line(no_mpi, tmp_path, started_by):
    env, log = no_mpi
    out = tmp_path / "run"
    args = ["run", "--out", str(out), *tiny_sets()]
    if started_by == "--launcher":
        args += ["--launcher", "mpi"]
    else:  # what mpiexec -n 2 sets: detected as MPI, so mpi4py is needed
        env = {**env, "PMI_SIZE": "2", "PMI_RANK": "0"}
    proc = hpcue(*args, env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("hpcue: error: --launcher mpi needs an MPI library: pip install "
                               "'hpcue[mpi]' or load your site's MPI module (mpi4py: cannot "
                               "load MPI library)"), lines[0]
    assert ("mpiexec started this process (PMI_SIZE=2)" in lines[0]) == (started_by == "mpiexec")
    assert log.exists() and not out.exists()


# a one-process Trainer in a clean interpreter where mpi4py and its library are both present
TRAINER = """
import sys
from pathlib import Path
from hpcue.training.trainer import TrainerSettings, make_trainer

trainer = make_trainer(TrainerSettings("32-true", False, 60.0), Path(sys.argv[1]) / "ckpt",
                       Path(sys.argv[1]) / "logs", "probe", 1)
print("mpi4py" in sys.modules, type(trainer.strategy).__name__,
      type(trainer._accelerator_connector.cluster_environment).__name__)
"""


@pytest.mark.parametrize("job", [{}, {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "uc",
                                      "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}])
def test_one_process_trainer_imports_no_mpi4py(tmp_path, job):
    pytest.importorskip("mpi4py")
    proc = subprocess.run([sys.executable, "-c", TRAINER, str(tmp_path)], cwd=REPO,
                          env=_env(**job), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # hpcue's own environment: Lightning detected none (no MPI, no Slurm requeue handlers)
    assert proc.stdout.split() == ["False", "SingleDeviceStrategy", "LightningEnvironment"]
