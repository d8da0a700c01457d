"""benchmarks/gpu_throughput.py, run tiny on the CPU as the issue asks: so that a lent GPU's
minutes go to measuring, every path of the script (both steps in two precisions, the option
rows with a compile, the feed, the profile, the Trainer's row, the GPU-hours) runs here and its
figures are checked against each other."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import warnings

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
OPTIONS = ("defaults", "channels_last", "compile generator")


@functools.cache
def load_script():
    """The script as a module (registered first: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-throughput") / "figures.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu",
                           "--json", str(out), "--options", ",".join(OPTIONS)],
                          cwd=out.parent, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize(("name", "precision", "peak"), [
    ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989.0),
    ("NVIDIA H100 PCIe", "bf16-mixed", 756.0),
    ("NVIDIA H200", "16-mixed", 989.0),
    ("NVIDIA A100-SXM4-80GB", "bf16-mixed", 312.0),
    ("Tesla V100-SXM2-32GB", "16-mixed", 125.0),
    ("Tesla V100-PCIE-16GB", "16-mixed", 112.0),
    ("Tesla V100-SXM2-32GB", "bf16-mixed", None),  # no bf16 tensor cores
    ("NVIDIA H100 NVL", "bf16-mixed", 835.0),
    ("NVIDIA H200 NVL", "bf16-mixed", 835.0),
    ("Tesla V100S-PCIE-32GB", "16-mixed", 130.0),
    ("AMD Instinct MI250X", "bf16-mixed", 191.5),  # one die of two
    ("AMD Instinct MI250", "bf16-mixed", 181.0),
    ("NVIDIA GeForce RTX 4090", "bf16-mixed", None),  # unknown: TFLOP/s only
])
def test_dense_peak_by_device_name(name, precision, peak):
    assert load_script().dense_peak(name, precision) == peak


def test_every_step_row_is_measured_and_consistent(tiny):
    steps = tiny["steps"]
    sizes = tiny["sizes"]
    assert {(r["step"], r["batch"], r["precision"]) for r in steps} == {
        (s, b, p) for s in ("stage1", "victim") for b in sizes["batches"]
        for p in sizes["precisions"]}
    for r in steps:
        assert "error" not in r, r
        assert r["images_per_s"] > 0 and r["flops_per_step"] > 0
        # achieved TFLOP/s is one step's counted FLOPs over its measured time
        assert r["tflops"] == pytest.approx(r["flops_per_step"] / r["seconds_per_step"] / 1e12)
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["seconds_per_step"])
        assert r["peak_share"] is None  # a CPU has no entry in the peak table


def test_flops_grow_with_the_batch_as_each_step_should(tiny):
    """The victim's work is all per image (twice the batch, twice the FLOPs); stage 1's
    generators run once a step whatever the batch, so its FLOPs grow by less than that."""
    flops = {(r["step"], r["batch"]): r["flops_per_step"] for r in tiny["steps"]
             if r["precision"] == "32-true"}
    small, large = tiny["sizes"]["batches"]
    assert flops["victim", large] / flops["victim", small] == pytest.approx(large / small,
                                                                            rel=0.02)
    assert 1 < flops["stage1", large] / flops["stage1", small] < large / small


def test_option_rows_compare_with_the_defaults_and_train_the_same(tiny):
    rows = {(r["step"], r["option"]): r for r in tiny["options"]}
    expected = {("stage1", o) for o in OPTIONS} | {("victim", o) for o in OPTIONS
                                                   if o != "compile generator"}
    expected |= {("stage1", "no augmentation"), ("victim", "no augmentation")}
    assert set(rows) == expected
    for (kind, option), row in rows.items():
        assert "error" not in row, row  # the compiled generator ran too
        assert row["vs_defaults"] == pytest.approx(
            row["images_per_s"] / rows[kind, "defaults"]["images_per_s"])
        if option != "no augmentation":  # (other images: other gradients, by design)
            # channels-last and the compiled generator train as the defaults do
            assert row["same_training"] is True, row
            assert row["gradient_difference"] <= row["tolerance"] == 1e-3


def test_feed_profile_trainer_and_hours(tiny):
    for row in tiny["feed"]:
        assert row["images_per_s"] > 0 and isinstance(row["keeps_up"], bool), row
        assert row["pinned"] is False  # pages are pinned for a GPU only
    assert {r["augmentation"] for r in tiny["feed"]} == {"device", "workers"}
    top = tiny["profile"]["top"]
    assert top and all(t["name"] and t["ms"] >= 0 for t in top)
    assert sum(t["share"] for t in top) <= 1 + 1e-9
    fit = tiny["lightning"]
    assert "error" not in fit and fit["images_per_s"] > 0 and fit["checkpoint_s"] > 0
    assert set(tiny["hours"]) == {"oxford-pet", "pathmnist"}
    for h in tiny["hours"].values():
        assert h["gpu_hours"] == pytest.approx(h["epochs"] * h["images"] / h["images_per_s"]
                                               / 3600)


def test_the_same_training_check_tells_a_wrong_option_from_a_rebuild():
    """What keeps a wrong speed-up from becoming a default: a step rebuilt under the same
    options trains as the first one (differences of 0), while a changed weight moves the
    gradients and a changed learning rate the update, each far past the tolerance."""
    import torch

    script = load_script()
    cpu = torch.device("cpu")

    def build():
        return script.uc_step(script.TINY, 4, "32-true", cpu)

    def grads(step):
        with warnings.catch_warnings():  # self.log outside a Trainer: nothing to log
            warnings.filterwarnings("ignore", message=".*self.log.*")
            return script.gradients(step)

    first = build()
    reference = grads(first)
    update = script.update_from(first, reference)
    again = build()
    assert script.relative_difference(grads(again), reference) == 0
    assert script.relative_difference(script.update_from(again, reference), update) == 0
    wrong = build()
    with torch.no_grad():
        next(iter(wrong.optimizer.param_groups[0]["params"])).mul_(1.5)
    assert script.relative_difference(grads(wrong), reference) > script.SAME_TRAINING
    faster = build()
    for group in faster.optimizer.param_groups:
        group["lr"] *= 2
    assert script.relative_difference(script.update_from(faster, reference),
                                      update) > script.SAME_TRAINING
