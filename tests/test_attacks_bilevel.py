"""The bilevel attacks (error-minimizing noise sample-wise and class-wise, AUE, AAP): each through
the CLI with ``attack.name``, its defining property, and sample-wise noise kept on the rank that
owns each image (the same noise as one process, under mpiexec)."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpcue.attacks.bilevel.module import BilevelModule, Rounds
from hpcue.attacks.registry import ATTACKS
from hpcue.config import ATTACK_CHOICES
from hpcue.data.loader import IndexedImages, OwnedBatches, make_owned_loader, owned_ids
from hpcue.data.shard_set import open_shards
from hpcue.data.tensors import to_float
from hpcue.models.small_cnn import SmallCNN
from hpcue.stages.artifacts import read_perturbations
from hpcue.stages.rundir import RunDir
from hpcue.training.views import seeded, strong_augmentation
from tests.conftest import REPO, hpcue, stop_after_first_epoch, tiny_sets
from tests.test_distributed import BIN, _env, _run

SETS = tiny_sets(["runtime.timeout_s=60", "data.test_fraction=0.252"])


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bilevel") / "base"
    hpcue("cluster", "--out", str(out), *SETS)
    return out


def _train(base: Path, out: Path, *sets: str, launch: list[str] | None = None) -> dict:
    shutil.copytree(base, out)
    args = ["train", "--out", str(out), *SETS, *(a for s in sets for a in ("--set", s))]
    if launch is None:
        hpcue(*args)
    else:
        _run([*launch, *args], _env())
    return json.loads(RunDir(out).stage_record("train").read_text())


def test_every_attack_the_config_names_is_registered():
    assert set(ATTACK_CHOICES) == set(ATTACKS) - {"random", "classwise"}


@pytest.mark.parametrize("bad, says", [
    ("attack.name=em", "attack.name"),
    ("attack.step_fraction=1.5", "attack.step_fraction"),
    ("attack.pgd_steps=0", "attack.pgd_steps"),
    ("attack.stop_error=1", "attack.stop_error"),
    ("attack.name=aap train.steps=5", "train.steps applies to attack.name=uc only"),
    ("attack.name=bayes_error attack.bayes_steps=0", "attack.bayes_steps"),
    ("attack.name=bayes_error attack.bayes_sigma=0", "attack.bayes_sigma"),
    ("attack.bayes_steps=5", "attack.bayes_steps applies to attack.name=bayes_error only"),
    ("attack.name=bayes_error attack.pgd_steps=3", "attack.pgd_steps applies to"),
])
def test_impossible_attack_settings_are_one_error(tmp_path, bad, says):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), *(a for b in bad.split() for a in ("--set", b)),
                 check=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not out.exists()


def _later_training_loss(images: torch.Tensor, labels: torch.Tensor, epochs: int = 3) -> float:
    """A fresh small CNN, SGD for ``epochs``: its mean training loss after the first epoch."""
    torch.manual_seed(0)
    model = SmallCNN(int(labels.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), 64):
            ids = order[start:start + 64]
            loss = F.cross_entropy(model(images[ids]), labels[ids])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch > 0:
                losses.append(float(loss.detach()))
    return float(np.mean(losses))


@pytest.mark.parametrize("name", ["em_samplewise", "em_classwise"])
def test_error_minimizing_noise_makes_the_training_set_easy(clustered, tmp_path, name):
    """EM's defining property: a model fits the perturbed set far faster than the clean one
    (the noise is a shortcut); sample-wise: one delta an image, class-wise: one a class."""
    out = tmp_path / name
    record = _train(clustered, out, f"attack.name={name}", "train.epochs=6")
    assert record["attack"] == {"name": name, "uses_labels": True}
    assert record["settings"]["pgd_steps"] == (20 if name == "em_samplewise" else 1)
    errors = [r["perturbed_train_error"] for r in record["rounds"]]
    # EM's stop rule: it stops at the first round under 1% error, or runs every epoch
    assert all(e >= 0.01 for e in errors[:-1]) and (errors[-1] < 0.01 or len(errors) == 6)
    saved = read_perturbations(RunDir(out))
    shards = open_shards(RunDir(out).data)
    labels = torch.from_numpy(shards.labels("train")).long()
    if name == "em_samplewise":
        assert torch.equal(saved.groups, torch.arange(len(labels)))
    else:
        assert torch.equal(saved.groups, labels) and len(saved.deltas) == len(shards.classes)
    assert 0 < float(saved.deltas.abs().max()) <= saved.epsilon + 1e-6
    images = torch.cat([to_float(torch.from_numpy(f)) for f in _train_images(shards)])
    perturbed = (images + saved.deltas[saved.groups]).clamp(0, 1).mul(255).round().div(255)
    # seen: 0.43 (sample-wise) and 0.34 (class-wise) of the clean loss
    clean_loss = _later_training_loss(images, labels)
    noisy_loss = _later_training_loss(perturbed, labels)
    assert noisy_loss < 0.6 * clean_loss, (noisy_loss, clean_loss)


def _train_images(shards) -> list[np.ndarray]:
    from hpcue.data.shards import reading

    out = []
    for info in shards.shards("train"):
        with reading(shards.root / info.file) as f:
            out.append(f["images"][:])
    return out


def test_strong_augmentation_is_seeded_and_crafted_through():
    """AUE/AAP's augmentation: per image, reproducible from its generator, and the noise's
    gradient passes through it (PGD through it crafts other noise than without it)."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    aug = strong_augmentation(16, 0.6)
    a = seeded(aug, x, torch.Generator().manual_seed(1))
    b = seeded(aug, x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    labels = torch.arange(8) % 4
    made = {}
    for strength in (None, 0.6):
        torch.manual_seed(0)
        module = BilevelModule(SmallCNN(4), torch.zeros(8, 3, 16, 16), torch.arange(8), labels,
                               4, 8 / 255, Rounds(pgd_steps=3, step=0.8 / 255, model_steps=0,
                                                  stop_error=None, strength=strength),
                               lr=0.1, total=8)
        made[strength] = module._pgd(x, labels, torch.zeros(8, 3, 16, 16), batch_idx=0)
        assert float(made[strength].abs().max()) <= 8 / 255 + 1e-6
    assert not torch.allclose(made[None], made[0.6])


def test_aap_trains_its_reference_model_then_crafts(clustered, tmp_path):
    record = _train(clustered, tmp_path / "aap", "attack.name=aap", "attack.reference_epochs=2",
                    "attack.pgd_steps=4")
    assert [r["phase"] for r in record["rounds"]] == ["reference model"] * 2 + ["crafting"]
    s = record["settings"]
    assert s["strength"] == 0.4 and s["target_shift"] == 1
    assert s["step"] == pytest.approx(0.01 * 16 / 255) and s["clip"] is None
    assert record["budget"]["epochs"] == 3
    plan = record["batch_plan"]  # each rank reads its own images once an epoch, none padded
    assert plan["images_per_epoch"] == plan["num_train"] and plan["padded_repeats_per_epoch"] == 0


def test_owned_batches_are_one_processs_global_batches():
    one = list(OwnedBatches(103, 16, 0, 1, seed=5))
    parts = [list(OwnedBatches(103, 16, r, 3, seed=5)) for r in range(3)]
    assert all(len(p) == len(one) == 7 for p in parts)
    for step, batch in enumerate(one):
        assert sorted(sum((p[step] for p in parts), [])) == sorted(batch)
    for r, p in enumerate(parts):  # each rank only ever sees the images it owns
        assert sorted(i for b in p for i in b) == owned_ids(103, r, 3).tolist()
    # a rank's share may be empty: an empty batch of the right shapes, from a collate that
    # loader workers started by spawn can pickle
    data = IndexedImages(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4))
    loader = make_owned_loader(data, 2, seed=0, rank=2, world_size=3)
    images, labels, ids = pickle.loads(pickle.dumps(loader.collate_fn))([])
    assert images.shape == (0, 3, 8, 8) and labels.shape == ids.shape == (0,)
    assert sum(len(b[2]) for b in loader) == 1 and loader.batch_sampler.rank_images == 1


def test_owned_sample_wise_noise_equals_one_process(clustered, tmp_path):
    """EM sample-wise on 2 ranks (each holding half the deltas) against 1 process at the same
    seed: the model equal up to float order, the noise up to sign flips of PGD steps taken on
    a float-noise gradient."""
    sets = ("attack.name=em_samplewise", "train.epochs=1", "attack.model_steps=3",
            "attack.pgd_steps=2")
    one = _train(clustered, tmp_path / "one", *sets)
    two = _train(clustered, tmp_path / "two", *sets,
                 launch=[str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue")])
    a, b = (torch.load(tmp_path / d / "perturbations.pt", weights_only=True)
            for d in ("one", "two"))
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key].float(), value.float(), atol=1e-5, rtol=0)
    diff = (a["deltas"] - b["deltas"]).abs()
    assert float((diff <= 1 / 255).float().mean()) > 0.995
    assert torch.equal(a["groups"], b["groups"])
    assert two["delta_parallel"] == "owned" and two["gather_bytes"] == a["deltas"].numel() * 4
    assert two["delta_bytes_per_rank"] == pytest.approx(one["delta_bytes_per_rank"] / 2, rel=0.01)
    assert two["bytes_per_step"] > 0 == one["bytes_per_step"]
    # the epoch checkpoint holds every image's delta, whatever the world size
    ckpt = torch.load(tmp_path / "two" / "checkpoints" / "train" / "last.ckpt",
                      weights_only=True)
    torch.testing.assert_close(ckpt["deltas"], b["deltas"])


def test_a_sample_wise_run_exports_its_training_split_only(tmp_path):
    out = tmp_path / "run"
    hpcue("run", "--out", str(out), *SETS, "--set", "attack.name=em_samplewise",
          "--set", "train.epochs=1", "--set", "attack.pgd_steps=2")
    results = json.loads((out / "results.json").read_text())
    assert results["attack"] == {"name": "em_samplewise", "uses_labels": True}
    assert results["attack_settings"]["pgd_steps"] == 2 and results["attack_seconds"] > 0
    proc = hpcue("export", str(out), "--format", "npz", "--out", str(tmp_path / "x"),
                 "--even-if-unprotected", check=False)
    assert proc.returncode == 2 and "--train-only" in proc.stderr
    assert not (tmp_path / "x").exists()
    hpcue("export", str(out), "--format", "npz", "--out", str(tmp_path / "y"),
          "--even-if-unprotected", "--train-only")
    assert (tmp_path / "y" / "manifest.json").is_file()



def test_owned_noise_killed_and_resumed_equals_uninterrupted(clustered, tmp_path):
    """Two ranks stopped by SIGTERM after an epoch; the same command resumes from the epoch
    checkpoint (every image's delta in it, each rank taking its own) and ends where an
    uninterrupted run ends."""
    sets = ["attack.name=em_samplewise", "attack.stop_error=0", "attack.pgd_steps=2",
            "train.epochs=4"]
    cut = tmp_path / "cut"
    stopped_and_resumed_on_two_ranks(clustered, tmp_path / "whole", cut, sets)
    record = json.loads(RunDir(cut).stage_record("train").read_text())
    assert [r["epoch"] for r in record["rounds"]] == [0, 1, 2, 3]


def stopped_and_resumed_on_two_ranks(base: Path, whole: Path, cut: Path,
                                     sets: list[str]) -> dict:
    """``train`` with ``sets`` on 2 ranks in ``whole``; again in ``cut``, stopped by SIGTERM
    after an epoch (nothing written yet), then resumed by the same command: both end with the
    same deltas and model. Returns the uninterrupted run's record."""
    mpi = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "hpcue")]
    record = _train(base, whole, *sets, launch=mpi)
    shutil.copytree(base, cut)
    args = ["train", "--out", str(cut), *SETS, *(a for s in sets for a in ("--set", s))]
    proc = subprocess.Popen([*mpi, *args], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    last = cut / "checkpoints" / "train" / "last.ckpt"
    stderr = stop_after_first_epoch(proc, last)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert not (cut / "perturbations.pt").exists()
    rerun = _run([*mpi, *args], _env())
    assert f"train: resuming from the epoch checkpoint {last}" in rerun.stdout
    a, b = (torch.load(d / "perturbations.pt", weights_only=True) for d in (whole, cut))
    torch.testing.assert_close(b["deltas"], a["deltas"])
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value)
    return record
