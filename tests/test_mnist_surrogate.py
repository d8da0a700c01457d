"""The embedded default's surrogate: MNIST-5k drawn as the digits, the small CNN trained on it,
shipped with its sha256, and what results.json says it saw."""

import hashlib
import json

import numpy as np
import pytest
import torch

from hpcue.data.mnist5k import load_mnist5k, render_like_digits
from hpcue.errors import InputError
from hpcue.models import shipped
from hpcue.models.surrogate import build_surrogate
from hpcue.training.mnist_surrogate import MnistRecipe, state_bytes, train_mnist_surrogate
from tests.conftest import hpcue, tiny_sets


@pytest.fixture(scope="module")
def mnist():
    return load_mnist5k()


def test_mnist_is_drawn_like_the_embedded_digits(mnist):
    from sklearn.datasets import load_digits

    raw, labels = mnist
    assert raw.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    levels = render_like_digits(raw[::10])
    digits = load_digits().images
    assert levels.shape == (500, 8, 8) and levels.min() == 0 and levels.max() == 16
    # the same ink: mean level, inked blocks, outer columns (empty in the UCI digits)
    assert abs(levels.mean() - digits.mean()) < 0.5
    assert abs((levels > 0).mean() - (digits > 0).mean()) < 0.06
    assert levels[:, :, 0].mean() < 0.2 and levels[:, :, 7].mean() < 0.5


def test_shipped_weights_match_their_sha256_and_record():
    path = shipped.shipped_weights("mnist5k")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == shipped.SHIPPED["mnist5k"].sha256
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == digest and record["saw_protected_labels"] is False
    assert record["held_out_accuracy"] > 0.95
    surrogate = build_surrogate("small_cnn", path)
    assert surrogate(torch.rand(2, 3, 16, 16)).shape == (2, 128)


def test_damaged_shipped_weights_are_an_error(tmp_path, monkeypatch):
    bad = tmp_path / "small_cnn-mnist5k.pt"
    bad.write_bytes(shipped.SHIPPED["mnist5k"].path.read_bytes()[:-10])
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(InputError, match="sha256 .* is not the shipped"):
        shipped.shipped_weights("mnist5k")
    bad.unlink()
    with pytest.raises(InputError, match="missing: reinstall"):
        shipped.shipped_weights("mnist5k")


def test_training_is_reproducible_from_its_seed_and_learns_mnist():
    one = MnistRecipe(epochs=1)
    model, record = train_mnist_surrogate(one)
    again, _ = train_mnist_surrogate(one)
    assert state_bytes(model) == state_bytes(again)
    other, _ = train_mnist_surrogate(MnistRecipe(epochs=1, seed=1))
    assert state_bytes(model) != state_bytes(other)
    assert record["held_out_accuracy"] > 0.8 and record["saw_protected_labels"] is False


def test_the_shipped_recipe_rebuilds_a_surrogate_that_clusters_the_digits():
    """The full recipe (20 epochs, about 25 s): MNIST accuracy as recorded, and the digits'
    clusters follow their classes though it never saw their labels."""
    from hpcue.attacks.uc.kmeans import kmeans
    from hpcue.data.importers.digits import load_digits_splits
    from hpcue.data.tensors import to_float
    from hpcue.evaluation.metrics import purity
    from hpcue.models.surrogate import Surrogate

    model, record = train_mnist_surrogate(MnistRecipe())
    shipped_record = json.loads(
        shipped.SHIPPED["mnist5k"].path.with_suffix(".json").read_text())
    assert json.loads(json.dumps(record["recipe"])) == shipped_record["recipe"]
    assert abs(record["held_out_accuracy"] - shipped_record["held_out_accuracy"]) < 0.02
    digits = load_digits_splits(16, 0.25, 0)["train"]
    with torch.no_grad():
        feats = Surrogate(model)(to_float(torch.from_numpy(digits.images)))
    result = kmeans(feats, 10, 3, 100, 1e-6, seed=0)
    assert purity(result.assignments, torch.from_numpy(digits.labels)) > 0.9


def test_surrogate_command_writes_weights_a_subset_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "five.pt"
    proc = hpcue("surrogate", "mnist5k", "--out", str(out), "--epochs", "1", "--digits",
                 "0,1,2,3,4")
    assert "held-out MNIST accuracy" in proc.stdout
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["trained_on"] == "mnist5k digits 0,1,2,3,4"
    assert "only the classes 0,1,2,3,4" in record["data"]
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert build_surrogate("small_cnn", out).backbone.body is not None
    assert torch.load(out, weights_only=True)["fc.weight"].shape[0] == 5
    # a given weights file: the run says what its record says it saw
    run = tmp_path / "run"
    hpcue("cluster", "--out", str(run), *tiny_sets([f"surrogate.weights={out}"]))
    origin = json.loads((run / "stages" / "cluster.json").read_text())["surrogate_origin"]
    assert origin["pretraining"] == "given_weights" and origin["saw_protected_labels"] is False
    assert origin["weights_sha256"] == record["sha256"] and "MNIST-5k" in origin["trained_on"]
    assert not (run / "surrogate.pt").exists()
    again = hpcue("surrogate", "mnist5k", "--out", str(out), check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = hpcue("surrogate", "mnist5k", "--out", str(tmp_path / "x.pt"), "--digits", "1,1",
                check=False)
    assert bad.returncode == 2 and "distinct" in bad.stderr and not (tmp_path / "x.pt").exists()


def test_what_a_given_weights_file_saw_comes_from_its_own_record_or_is_unknown(tmp_path):
    from hpcue.stages.surrogates import _from_record, _stock

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert _from_record(weights, digest)["saw_protected_labels"] is None  # no record
    record = {"data": "MNIST-5k; only the classes 0,1", "labels_used": "MNIST's",
              "saw_protected_labels": False, "sha256": digest}
    weights.with_suffix(".json").write_text(json.dumps(record))
    said = _from_record(weights, digest)
    assert said["saw_protected_labels"] is False and said["trained_on"] == record["data"]
    stale = _from_record(weights, "0" * 64)  # the record of another file
    assert stale["saw_protected_labels"] is None and "record of another file" in stale["trained_on"]
    # torchvision's file names carry their sha256's first 8 digits: a fine-tuned file is not
    # reported as ImageNet's
    assert _stock("resnet50", None, "ab")
    assert _stock("resnet50", weights, "0676ba61" + "0" * 56)
    assert not _stock("resnet50", weights, digest) and not _stock("clip_rn50", weights, digest)


def test_surrogate_command_never_overwrites_a_record(tmp_path):
    (tmp_path / "w.json").write_text("{}")
    proc = hpcue("surrogate", "mnist5k", "--out", str(tmp_path / "w.pt"), check=False)
    assert proc.returncode == 2 and "w.json exists" in proc.stderr
    proc = hpcue("surrogate", "mnist5k", "--out", str(tmp_path / "x.json"), check=False)
    assert proc.returncode == 2 and "another name than .json" in proc.stderr
    for args, message in ((["--digits", "a,b"], "expected digits like 0,1,2,3,4"),
                          (["--epochs", "0"], "--epochs must be at least 1")):
        proc = hpcue("surrogate", "mnist5k", "--out", str(tmp_path / "w.pt"), *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "x.json").exists()
