"""``hpcue doctor``: one line per check, every stage at tiny sizes, an all-reduce over the real
ranks of a launcher, and a non-zero exit naming what failed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, hpcue

BIN = Path(sys.executable).parent


def _lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines()
            if line.startswith(("ok  ", "FAIL", "info", "doctor:"))]


def test_doctor_runs_every_stage_and_names_what_failed(tmp_path):
    # resnet18 without cached weights: the check fails by name, the stages (which train their
    # own small surrogate) still run, and the exit status says that something failed
    proc = hpcue("doctor", "--out", str(tmp_path), "--set", "surrogate.arch=resnet18",
                 env={"TORCH_HOME": str(tmp_path / "torch-home")}, check=False)
    lines = _lines(proc.stdout)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines[0].startswith("ok    launcher: launcher=local world_size=1")
    assert any(line.startswith("info  torch: ") for line in lines)
    # every speed option off on a CPU (auto), said before the stages run
    said = [i for i, line in enumerate(lines) if line.startswith(
        "info  speed: channels_last off, compile nothing, fused optimizer off, pinned pages off")]
    first_stage = next(i for i, line in enumerate(lines) if line.startswith("ok    stage "))
    assert len(said) == 1 and said[0] < first_stage, lines
    fails = [line for line in lines if line.startswith("FAIL")]
    assert len(fails) == 1 and "surrogate weights: ImageNet weights for resnet18 not found at "\
        f"{tmp_path / 'torch-home'}" in fails[0], fails
    for stage in ("cluster", "train", "generate", "evaluate"):
        assert any(line.startswith(f"ok    stage {stage}: ") for line in lines), stage
    assert lines[-1] == "doctor: FAILED (see the FAIL lines)"
    assert list(tmp_path.glob("doctor-*")) == []  # the tiny run passed: removed


def test_doctor_under_torchrun_all_reduces_over_both_ranks(tmp_path):
    port = str(random.randint(20000, 40000))
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", port,
         "-m", "hpcue.cli", "doctor", "--out", str(tmp_path), "--set", "runtime.timeout_s=120"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = _lines(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines[0].startswith("ok    launcher: launcher=torchrun world_size=2 nodes=1 "
                               "ranks_per_node=2")
    assert any(line.startswith("ok    all-reduce gloo: sum 3 over 2 ranks (expected 3)")
               for line in lines), lines
    assert lines[-1] == "doctor: all checks passed"
    assert sum(line.startswith("ok    stage ") for line in lines) == 4
    assert proc.stdout.count("doctor: all checks passed") == 1  # rank 0 speaks for both
