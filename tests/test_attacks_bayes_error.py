"""Bayes-error maximisation: its estimate (against the definition, block by block), the images
moving up the estimate of the model they were crafted on, its settings, and its owned deltas on
2 ranks (the same as 1 process; stopped and resumed as if never stopped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from hpcue.attacks.bayes_error.objective import bayes_error_and_gradient
from hpcue.data.shard_set import open_shards
from hpcue.data.tensors import to_float
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.victims import penultimate
from hpcue.stages.artifacts import read_perturbations
from hpcue.stages.rundir import RunDir
from tests.conftest import hpcue
from tests.test_attacks_bilevel import (
    SETS,
    _train,
    _train_images,
    stopped_and_resumed_on_two_ranks,
)
from tests.test_distributed import BIN

MPI = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue")]


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bayes") / "base"
    hpcue("cluster", "--out", str(out), *SETS)
    return out


def _by_definition(features: torch.Tensor, labels: torch.Tensor, sigma: float) -> float:
    """mean_i (1 - max_c p_i(c)), p_i(c) = sum_{j != i, y_j = c} k_ij / sum_{j != i} k_ij, with
    k_ij = exp(-|x_i - x_j|^2 / 2 sigma^2) on x = features / max |features|: one image at a
    time."""
    x = features.double() / features.abs().max()
    errors = []
    for i in range(len(x)):
        k = torch.exp(-((x - x[i]) ** 2).sum(1) / (2 * sigma ** 2))
        k[i] = 0
        shares = [float(k[labels == c].sum() / k.sum()) for c in range(int(labels.max()) + 1)]
        errors.append(1 - max(shares))
    return sum(errors) / len(errors)


def test_the_estimate_is_the_kernel_bayes_error_block_by_block():
    torch.manual_seed(0)
    labels = torch.arange(60) % 4
    apart = torch.randn(60, 8) * 0.05 + 3 * torch.eye(8)[labels]   # four tight, far clusters
    mixed = torch.randn(60, 8)                                      # labels unrelated to place
    for features in (apart, mixed):
        whole, grad = bayes_error_and_gradient(features, labels, 0.3, 4)
        assert whole == pytest.approx(_by_definition(features, labels, 0.3), abs=1e-6)
        blocked, grad7 = bayes_error_and_gradient(features, labels, 0.3, 4, block=7)
        assert blocked == pytest.approx(whole, abs=1e-6)
        torch.testing.assert_close(grad7, grad)
    assert bayes_error_and_gradient(apart, labels, 0.3, 4)[0] < 0.01
    assert bayes_error_and_gradient(mixed, labels, 0.3, 4)[0] > 0.5
    # its gradient points up: a small step along it raises the estimate
    before, grad = bayes_error_and_gradient(mixed, labels, 0.3, 4)
    after, _ = bayes_error_and_gradient(mixed + 1e-3 * grad / grad.norm(), labels, 0.3, 4)
    assert after > before


def test_penultimate_is_what_the_classifier_reads():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    small = SmallCNN(5).eval()
    torch.testing.assert_close(penultimate(small, x), small.features(x))
    net = resnet18(weights=None, num_classes=5).eval()
    features = penultimate(net, x)
    assert features.shape == (3, 512)
    torch.testing.assert_close(net.fc(features), net(x))


def test_the_images_move_up_the_estimate_of_the_model_they_were_crafted_on(clustered, tmp_path):
    """One outer step: a model trained 3 epochs on the clean images, then one AdamW step of the
    images up its features' Bayes-error estimate. The saved model is that model: on the
    perturbed images its estimate must be higher than on the clean ones."""
    out = tmp_path / "be"
    record = _train(clustered, out, "attack.name=bayes_error", "attack.bayes_steps=1",
                    "attack.bayes_retrain_epochs=3")
    assert record["attack"] == {"name": "bayes_error", "uses_labels": True}
    s = record["settings"]
    assert (s["steps"], s["retrain_epochs"], s["sigma"]) == (1, 3, 0.3) and s["reduced"]
    assert s["image_lr"] == pytest.approx(2.0) and s["paper"] == {"steps": 2000,
                                                                  "retrain_epochs": 30}
    assert record["budget"]["epochs"] == 5  # 3 retraining, features, ascent
    assert [r["step"] for r in record["rounds"]] == [0]
    saved = read_perturbations(RunDir(out))
    shards = open_shards(RunDir(out).data)
    labels = torch.from_numpy(shards.labels("train")).long()
    assert torch.equal(saved.groups, torch.arange(len(labels)))
    assert 0 < float(saved.deltas.abs().max()) <= saved.epsilon + 1e-6
    images = torch.cat([to_float(torch.from_numpy(f)) for f in _train_images(shards)])
    model = SmallCNN(len(shards.classes))
    model.load_state_dict(saved.state["model"])
    model.eval()
    with torch.no_grad():
        clean = bayes_error_and_gradient(penultimate(model, images), labels, 0.3, 10)[0]
        moved = (images + saved.deltas[saved.groups]).clamp(0, 1)
        perturbed = bayes_error_and_gradient(penultimate(model, moved), labels, 0.3, 10)[0]
    assert clean == pytest.approx(record["rounds"][0]["bayes_error"], abs=1e-4)
    assert perturbed > clean + 0.05, (clean, perturbed)  # seen: 0.006 -> 0.124


BOTH = ("attack.name=bayes_error", "attack.bayes_retrain_epochs=1",
        "train.global_batch_size=512")  # 3 model steps an epoch: float order cannot grow yet


def test_owned_bayes_error_noise_equals_one_process(clustered, tmp_path):
    """One outer step on 2 ranks (each holding half the deltas and their AdamW moments, the
    kernel's blocks split) against 1 process: the same estimate up to float order, the same
    noise but where Adam's first step took the sign of a gradient at float noise."""
    one = _train(clustered, tmp_path / "one", *BOTH, "attack.bayes_steps=1")
    two = _train(clustered, tmp_path / "two", *BOTH, "attack.bayes_steps=1", launch=MPI)
    assert two["rounds"][0]["bayes_error"] == pytest.approx(one["rounds"][0]["bayes_error"],
                                                            rel=1e-4)
    a, b = (torch.load(tmp_path / d / "perturbations.pt", weights_only=True)
            for d in ("one", "two"))
    diff = (a["deltas"] - b["deltas"]).abs()
    assert float((diff <= 1 / 255).float().mean()) > 0.99  # seen: 0.9944
    assert two["feature_bytes"] > 0 == one["feature_bytes"]
    assert two["delta_bytes_per_rank"] == pytest.approx(one["delta_bytes_per_rank"] / 2, rel=0.01)
    ckpt = torch.load(tmp_path / "two" / "checkpoints" / "train" / "last.ckpt",
                      weights_only=True)
    torch.testing.assert_close(ckpt["deltas"], b["deltas"])
    assert ckpt["adam"]["exp_avg"].shape == b["deltas"].shape and ckpt["adam"]["step"] == 1


def test_owned_bayes_error_killed_and_resumed_equals_uninterrupted(clustered, tmp_path):
    """Two ranks stopped by SIGTERM after an epoch resume from the checkpoint (deltas, AdamW's
    moments, the feature gradient, the model and its place in the outer loop) and end where an
    uninterrupted run ends."""
    cut = tmp_path / "cut"
    whole = stopped_and_resumed_on_two_ranks(clustered, tmp_path / "whole", cut,
                                             [*BOTH, "attack.bayes_steps=4"])
    record = json.loads(RunDir(cut).stage_record("train").read_text())
    assert [r["bayes_error"] for r in record["rounds"]] == pytest.approx(
        [r["bayes_error"] for r in whole["rounds"]], rel=1e-6)


def test_a_checkpoint_carries_the_ascent_between_any_two_epochs():
    """What an epoch leaves for the next (AdamW's moments and step, the feature gradient, the
    deltas, the estimates so far) comes back from the checkpoint whole, on the rows a rank owns."""
    from hpcue.attacks.bayes_error.module import Ascent, BayesErrorModule

    def module(row_of: torch.Tensor, rows: int) -> BayesErrorModule:
        return BayesErrorModule(SmallCNN(3), lambda step: SmallCNN(3), torch.zeros(rows, 1, 8, 8),
                                row_of, torch.arange(6) % 3, 3, 0.1, Ascent(2, 1, 0.3, 0.01),
                                lr=0.1, total=6)

    first = module(torch.arange(6), 6)
    first.rows = torch.rand(6, 1, 8, 8) * 0.1
    first.adam = {"step": torch.tensor(3.0), "exp_avg": torch.rand(6, 1, 8, 8),
                  "exp_avg_sq": torch.rand(6, 1, 8, 8)}
    first.feature_grad = torch.rand(6, 128)
    first.history = [{"step": 0, "epoch": 2, "bayes_error": 0.25}]
    checkpoint: dict = {}
    first.on_save_checkpoint(checkpoint)
    # a rank that owns images 1, 3 and 5
    row_of = torch.tensor([-1, 0, -1, 1, -1, 2])
    second = module(row_of, 3)
    second.on_load_checkpoint(checkpoint)
    odd = torch.tensor([1, 3, 5])
    torch.testing.assert_close(second.rows, first.rows[odd])
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(second.adam[key], first.adam[key][odd])
    assert float(second.adam["step"]) == 3.0
    torch.testing.assert_close(second.feature_grad, first.feature_grad)
    assert second.history == first.history
