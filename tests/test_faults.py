"""Faults a run must survive: bad input found late, a diverged training, damaged or crafted
files, a second command on the same directory, kills at stage boundaries and a full disk.

Each one ends in one line naming what is wrong and where, a non-zero exit, and nothing of an
earlier result lost.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hpcue.errors import BusyError, InputError, NonFiniteError
from hpcue.io import atomic_write_json, exclusive, read_json
from hpcue.stages.artifacts import read_clusters, read_perturbations
from hpcue.stages.guard import restore_replaced
from hpcue.stages.rundir import RunDir, StageInputError
from hpcue.training.trainer import check_checkpoint
from tests.conftest import REPO, hpcue, tiny_sets
from tests.fabricate import fill_disk

SETS = tiny_sets()


@pytest.fixture(scope="module")
def finished(finished_run) -> Path:
    return finished_run[0]


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".hpcue.lock"))
    return dst


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every result file's bytes, to show that nothing was lost."""
    names = ["results.json", "perturbations.pt", "clusters.pt", "config.yaml",
             "stages/train.json", "stages/evaluate.json", "unlearnable/meta.json"]
    return {n: (run / n).read_bytes() for n in names}


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcue: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:  # a config error lists its keys on the lines after it
        assert needle in proc.stderr[proc.stderr.index("hpcue: error:"):], errors[0]
    return errors[0]


# -- files that are damaged, crafted or hold non-finite numbers (no run needed) --------------

class _RunsCode:
    """Unpickling this runs a command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_damaged_or_crafted_artifacts_are_one_error_naming_the_file(tmp_path):
    run = RunDir(tmp_path)
    marker = tmp_path / "code-ran"
    good = {"centers": torch.zeros(3, 4), "assignments": torch.tensor([0, 2, 1])}
    bad_contents = {
        "truncated": None,
        "random bytes": os.urandom(300),
        "a list": [1, 2],
        "float assignments": {**good, "assignments": torch.zeros(3)},
        "assignments beyond K": {**good, "assignments": torch.tensor([0, 3, 1])},
        "code": _RunsCode(marker),
    }
    torch.save(good, run.clusters)
    whole = run.clusters.read_bytes()
    for what, content in bad_contents.items():
        if what == "truncated":
            run.clusters.write_bytes(whole[:len(whole) // 2])
        elif isinstance(content, bytes):
            run.clusters.write_bytes(content)
        else:
            with open(run.clusters, "wb") as fh:
                pickle.dump(content, fh) if what == "code" else torch.save(content, fh)
        with pytest.raises(InputError, match="clusters.pt: .*rerun `hpcue cluster"):
            read_clusters(run)
    assert not marker.exists()  # the crafted file was refused, not run


def test_perturbations_must_be_finite_and_within_epsilon(tmp_path):
    run = RunDir(tmp_path)
    eps = 16 / 255
    torch.save({"deltas": torch.full((2, 1, 8, 8), float("nan")), "epsilon": eps},
               run.perturbations)
    with pytest.raises(NonFiniteError, match="perturbations.pt: .*NaN or infinite"):
        read_perturbations(run)
    torch.save({"deltas": torch.full((2, 1, 8, 8), 2 * eps), "epsilon": eps}, run.perturbations)
    with pytest.raises(InputError, match="beyond epsilon"):
        read_perturbations(run)
    torch.save({"deltas": torch.zeros(2, 8, 8), "epsilon": eps}, run.perturbations)
    with pytest.raises(InputError, match="'deltas' should be a 4-d"):
        read_perturbations(run)


def test_crafted_epoch_checkpoint_is_refused_before_it_can_run_code(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "last.ckpt"
    with open(ckpt, "wb") as fh:
        pickle.dump({"state_dict": _RunsCode(marker)}, fh)
    # the environment switch that turns weights-only loading off must not turn it off here
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with pytest.raises(InputError, match="last.ckpt: not an epoch checkpoint .* delete it"):
            check_checkpoint(ckpt)
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    assert not marker.exists()


def test_json_results_never_hold_nan_or_infinity(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(NonFiniteError, match=r"victims\.uc\.mean, psnr_db"):
        atomic_write_json(path, {"victims": {"uc": {"mean": float("nan")}},
                                 "psnr_db": float("inf"), "ok": 1.0})
    assert not path.exists() and not list(tmp_path.iterdir())
    path.write_text('{"clean_test_acc": NaN}')
    with pytest.raises(InputError, match="results.json: not valid JSON .*NaN"):
        read_json(path)


def test_a_crafted_set_aside_manifest_is_never_followed(tmp_path):
    run = RunDir(tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    run.replaced.mkdir(parents=True)
    (run.replaced / "0").write_text("overwritten")
    (run.replaced / "moved.json").write_text(json.dumps(["../victim.txt"]))
    with pytest.raises(StageInputError, match=r"moved.json: names \['../victim.txt'\], not "
                                              r"files of a run directory"):
        restore_replaced(run)
    assert victim.read_text() == "mine"


def test_second_holder_of_a_run_directory_is_told_who_holds_it(tmp_path):
    lock = tmp_path / ".hpcue.lock"
    with exclusive(lock, "run directory x"):
        with pytest.raises(BusyError, match=rf"run directory x is in use by hpcue on .*pid "
                                            rf"{os.getpid()}"):
            with exclusive(lock, "run directory x"):
                pass
    with exclusive(lock, "run directory x"):  # released at the end of the block
        pass


# -- whole commands on a finished run ----------------------------------------------------------

def test_stage_with_a_missing_input_changes_nothing(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    # a set-aside folder this command did not write (left by a crash, or crafted) is never
    # restored by it: here it would overwrite a file outside the run directory
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    run_dir = RunDir(run)
    run_dir.replaced.mkdir()
    (run_dir.replaced / "0").write_text("overwritten")
    (run_dir.replaced / "moved.json").write_text(json.dumps([str(victim)]))
    before = _snapshot(run)
    proc = hpcue("train", "--out", str(run), "--set", "surrogate.weights=/no/such.pth",
                 check=False)
    _one_line_error(proc, "/no/such.pth")
    assert _snapshot(run) == before and victim.read_text() == "mine"


def test_a_stage_command_never_replaces_finished_results_without_force(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = _snapshot(run)
    proc = hpcue("generate", "--out", str(run), check=False)
    _one_line_error(proc, f"{run}: `hpcue generate` would replace the finished results of "
                          f"generate, evaluate (results.json, unlearnable", "--force")
    assert _snapshot(run) == before and (run / "preview.png").is_file()
    assert not (run / ".replaced").exists()
    # and a stage command never guesses its run directory (runs/<name>)
    proc = hpcue("generate", check=False)
    assert proc.returncode == 2 and "the following arguments are required: --out" in proc.stderr


def test_bad_input_found_while_a_stage_runs_puts_back_what_it_replaced(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    (run / "clusters.pt").write_bytes((run / "clusters.pt").read_bytes()[:200])
    before = _snapshot(run)
    proc = hpcue("generate", "--out", str(run), "--force", check=False)
    _one_line_error(proc, f"{run}/clusters.pt: not readable", "hpcue cluster")
    assert "restored what it replaced" in proc.stdout
    assert _snapshot(run) == before and (run / "preview.png").is_file()
    assert not (run / ".replaced").exists() and not (run / "unlearnable.partial").exists()


def test_a_diverging_training_stops_and_reports_no_protection(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = _snapshot(run)
    proc = hpcue("train", "--out", str(run), "--force", "--set", "train.lr=1e30",
                 check=False)
    _one_line_error(proc, "training 'train': the loss became nan", "lower its lr")
    assert _snapshot(run) == before  # the earlier, finite result is back
    proc = hpcue("run", "--out", str(tmp_path / "lr-inf"), "--set", "train.lr=.inf",
                 check=False)
    _one_line_error(proc, "train.lr: Input should be a finite number")
    assert not (tmp_path / "lr-inf").exists()


def test_a_second_command_on_a_busy_run_directory_is_refused(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = _snapshot(run)
    with exclusive(run / ".hpcue.lock", "held by this test"):
        proc = hpcue("evaluate", "--out", str(run), check=False)
    _one_line_error(proc, f"run directory {run} is in use by hpcue on", f"pid {os.getpid()}")
    assert _snapshot(run) == before


def _wait_for(proc: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"ended ({proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def test_killed_at_each_stage_boundary_then_rerun_equals_the_uninterrupted_run(finished,
                                                                                tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hpcue.cli", "run", "--out", str(out), *SETS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage in ("cluster", "train", "generate"):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_for(proc, out / "stages" / f"{stage}.json")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rerun = hpcue("run", "--out", str(out), *SETS)
    assert "stage generate: done earlier" in rerun.stdout
    a, b = (read_json(d / "results.json") for d in (finished, out))
    for key in ("cluster_purity", "clean_test_acc", "unlearnable_test_acc",
                "max_abs_pixel_change_255", "psnr_db"):
        assert a[key] == b[key], key
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as "
                                               "root); the full-disk path is not tested here")
def test_a_full_disk_is_one_error_and_leaves_no_temporaries(finished, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "16m"):
        pytest.fail("mount -t tmpfs failed although running as root")
    try:
        run = _copy(finished, disk / "run")
        before = _snapshot(run)
        filler = fill_disk(disk, leave=256 * 1024)
        proc = hpcue("generate", "--out", str(run), "--force", check=False)
        _one_line_error(proc, "no space left writing", str(run))
        assert _snapshot(run) == before  # the earlier unlearnable set is back
        assert not list(disk.rglob("*.tmp")) and not list(disk.rglob("*.partial"))
        # a full disk inside Lightning (an epoch checkpoint) is the same: one line, all back
        proc = hpcue("train", "--out", str(run), "--force", check=False)
        _one_line_error(proc, "no space left on the file system of", str(run))
        assert "restored what it replaced" in proc.stdout
        assert _snapshot(run) == before
        filler.unlink()
        hpcue("generate", "--out", str(run), "--force")  # with space again, it just works
        assert json.loads((run / "stages" / "generate.json").read_text())["num_images"] > 0
    finally:
        subprocess.run(["umount", str(disk)], check=True)
