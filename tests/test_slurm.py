"""A real one-node Slurm (slurmctld + slurmd + munge, started by .ci/slurm-up.sh): an sbatch job
whose srun starts 2 tasks of ``hpcue run``, checked against one process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_distributed import DIST, _env, assert_matches_one_process, one_process  # noqa: F401

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def slurm():
    """The cluster CI started; bring it up here (as CI does) when it is not running."""
    if shutil.which("sinfo") is None or subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip() not in (
            "idle", "mixed"):
        up = subprocess.run(["bash", str(REPO / ".ci" / "slurm-up.sh")], capture_output=True,
                            text=True, timeout=600)
        assert up.returncode == 0, f".ci/slurm-up.sh failed:\n{up.stdout}\n{up.stderr}"
    return shutil.which("sbatch")


def test_sbatch_srun_two_tasks(slurm, one_process, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join([
        "#!/bin/bash",
        "#SBATCH --job-name=hpcue-test",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --time=00:15:00",
        f"#SBATCH --output={tmp_path}/slurm-%j.out",
        "export OMP_NUM_THREADS=1",
        f"srun {BIN / 'hpcue'} run --out {out} " + " ".join(DIST),
        "",
    ]))
    proc = subprocess.run([slurm, "--wait", "--chdir", str(REPO), str(script)],
                          env=_env(), capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs[-4000:]}"
    assert "launcher=slurm world_size=2 nodes=1 ranks_per_node=2 backend=gloo" in logs
    assert_matches_one_process(out, one_process, "slurm")
