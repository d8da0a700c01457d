"""A run stopped mid-training (SIGTERM) and run again equals an uninterrupted run with the same
seed."""

import json
import os
import signal
import subprocess
import sys

import torch

from tests.conftest import REPO, hpcue, stop_after_first_epoch, tiny_sets

# crop_flip: a resumed run must draw the same augmentation as an uninterrupted one
SETS = tiny_sets(["train.epochs=40", "data.augment=crop_flip"])


def test_killed_then_rerun_equals_uninterrupted(tmp_path):
    whole = tmp_path / "whole"
    hpcue("run", "--out", str(whole), *SETS)

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "hpcue.cli", "run", "--out", str(cut), *SETS],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = cut / "checkpoints" / "train" / "last.ckpt"
    # a job's wall time: SIGTERM is a failure that says how to resume, never a success
    stderr = stop_after_first_epoch(proc, last)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        f"hpcue: stopped by SIGTERM; finished stages and epoch checkpoints are kept in {cut}: "
        f"run the same `hpcue run` again to resume")
    assert "Traceback" not in stderr
    assert not (cut / "perturbations.pt").exists()

    rerun = hpcue("run", "--out", str(cut), *SETS)
    assert "stage cluster: done earlier" in rerun.stdout
    assert f"train: resuming from the epoch checkpoint {last}" in rerun.stdout
    a = torch.load(whole / "perturbations.pt", weights_only=True)["deltas"]
    b = torch.load(cut / "perturbations.pt", weights_only=True)["deltas"]
    torch.testing.assert_close(a, b)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    for key in ("cluster_purity", "clean_test_acc", "unlearnable_test_acc"):
        assert ra[key] == rb[key], key
    # the first attempt's metrics are kept beside the resumed attempt's
    first = (cut / "logs" / "train" / "metrics.csv").read_text()
    later = (cut / "logs" / "train" / "resumed-1" / "metrics.csv").read_text()
    assert first.count("\n") > 1 and later.count("\n") > 1
    # the throughput meter is resumed too: every epoch's images counted once
    ta, tb = (json.loads((d / "stages" / "train.json").read_text()) for d in (whole, cut))
    assert ta["train_images"] == tb["train_images"] > 0 and tb["images_per_second"] > 0


def test_rerun_with_another_config_is_refused(tmp_path):
    out = tmp_path / "run"
    hpcue("cluster", "--out", str(out), *SETS)
    proc = hpcue("run", "--out", str(out), *tiny_sets(["train.epochs=41"]), check=False)
    assert proc.returncode == 2 and "holds a run with another config" in proc.stderr
    assert "train.epochs: 40 there, 41 now" in proc.stderr  # the keys that differ, named


def test_stage_rerun_with_other_settings_does_not_resume_old_checkpoints(tmp_path):
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    hpcue("run", "--out", str(out), *tiny_sets())
    assert (out / "checkpoints" / "victims" / "last.ckpt").is_file()
    hpcue("evaluate", "--out", str(out), "--force", "--set", "victim.epochs=3")
    hpcue("run", "--out", str(fresh), *tiny_sets(["victim.epochs=3"]))
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (out, fresh))
    # trained anew for 3 epochs, exactly as a fresh run; not resumed from the 2-epoch victims
    assert (ra["clean_test_acc"], ra["unlearnable_test_acc"]) == (
        rb["clean_test_acc"], rb["unlearnable_test_acc"])


def test_stage_rerun_clears_the_stages_derived_from_it(tmp_path):
    out = tmp_path / "run"
    hpcue("run", "--out", str(out), *tiny_sets())
    # a stage rerun with a config the data refutes clears nothing and keeps the saved config
    config = (out / "config.yaml").read_text()
    bad = hpcue("cluster", "--out", str(out), "--set", "cluster.num_clusters=5000", check=False)
    assert bad.returncode == 2 and "num_clusters=5000 is larger" in bad.stderr
    assert (out / "config.yaml").read_text() == config
    assert (out / "results.json").is_file() and (out / "stages" / "evaluate.json").is_file()
    # killed between results.json and the evaluate record: the rerun finishes evaluate
    (out / "stages" / "evaluate.json").unlink()
    again = hpcue("run", "--out", str(out))
    assert "stage evaluate ->" in again.stdout and (out / "stages" / "evaluate.json").is_file()
    train = hpcue("train", "--out", str(out), "--force", "--set", "train.epsilon=0.02")
    assert "replacing earlier results of: train, generate, evaluate" in train.stdout
    for gone in ("stages/generate.json", "stages/evaluate.json", "results.json", "unlearnable",
                 "preview.png", "checkpoints/victims"):
        assert not (out / gone).exists(), gone
    rerun = hpcue("run", "--out", str(out))  # the saved config, now with the new epsilon
    assert "stage train: done earlier" in rerun.stdout
    assert "stage generate ->" in rerun.stdout and "stage evaluate ->" in rerun.stdout
    assert json.loads((out / "results.json").read_text())["epsilon"] == 0.02


def test_config_error_found_late_leaves_no_run_directory(tmp_path):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), *tiny_sets(["cluster.num_clusters=5000"]),
                 check=False)
    assert proc.returncode == 2 and "num_clusters=5000 is larger than the training set" in (
        proc.stderr)
    assert not out.exists()
    proc = hpcue("run", "--out", str(out), *tiny_sets(["runtime.max_micro_batch=5"]),
                 check=False)
    assert proc.returncode == 2 and "not a multiple of runtime.max_micro_batch=5" in proc.stderr
    assert not out.exists()


LEAVE = """
import atexit, os, sys, torch.distributed as dist
from hpcue.cli import leave
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
atexit.register(lambda: print("teardown ran", flush=True))
assert leave(0) == 0  # success: the interpreter's usual exit
print("stopped", flush=True)
leave(143)
print("after leave", flush=True)
"""


def test_a_stopped_rank_of_a_process_group_leaves_without_teardown():
    """A rank that stops with its process group up exits with the code, its output flushed,
    and without the interpreter's teardown (which can abort on gloo's threads: exit 6)."""
    from tests.test_distributed import _free_port

    done = subprocess.run([sys.executable, "-c", LEAVE.format(port=_free_port())], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr[-2000:]
    assert done.stdout.split() == ["stopped"]
