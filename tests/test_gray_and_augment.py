"""What suits each data set: one-channel perturbations for gray data, crops without flips for
digits; recorded at prepare time and resolved from ``auto`` by the stages."""

import numpy as np
import pytest
import torch

from hpcue.attacks.base import AttackInputs, perturb
from hpcue.attacks.noise import RandomNoise
from hpcue.config import RunConfig
from hpcue.data.arrays import is_gray
from hpcue.data.prepare import PrepareOptions, prepare
from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.evaluation.defenses import grayscale
from hpcue.models.generator import ClusterGenerators
from hpcue.stages.context import StageContext
from hpcue.training.batches import augment_batch
from tests import fabricate

EPS = 16 / 255


def test_is_gray_needs_every_pixel_equal_in_r_g_b():
    images = np.repeat(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), np.uint8), 3, -1)
    assert is_gray(images)
    images[1, 4, 4, 2] ^= 1
    assert not is_gray(images)


@pytest.mark.parametrize("channels, gray", [(1, True), (3, False)])
def test_prepare_records_whether_the_data_set_is_gray(tmp_path, channels, gray):
    fabricate.medmnist_npz(tmp_path / "raw", "organamnist", 28, channels=channels, n=6)
    out = prepare("medmnist:organamnist", tmp_path / "raw", tmp_path / "out",
                  PrepareOptions(image_size=28, shards=1))
    assert open_shards(out).grayscale is gray
    assert open_shards(out).meta["grayscale"] is gray


def test_shards_prepared_before_the_record_count_as_colour_and_say_so(capsys):
    assert ShardSet(root=None, meta={}).grayscale is False
    ctx = _context({}, {})
    assert ctx.perturbation_channels == 3
    assert "does not say whether its images are gray" in capsys.readouterr().out


def test_one_channel_perturbations_keep_gray_images_gray_and_survive_grayscale():
    gens = ClusterGenerators(3, 16, EPS, width=4, blocks=1, seed=0, channels=1)
    with torch.no_grad():
        deltas = gens()
    assert deltas.shape == (3, 1, 16, 16) and float(deltas.abs().max()) <= EPS + 1e-7
    noise = RandomNoise().make(AttackInputs(groups=torch.arange(3), num_groups=3, image_size=16,
                                            epsilon=EPS, seed=0, channels=1)).deltas
    assert noise.shape == (3, 1, 16, 16)
    gray = torch.rand(6, 1, 16, 16).expand(-1, 3, -1, -1)
    for d in (deltas, noise):
        out = perturb(gray, d, torch.tensor([0, 1, 2, 0, 1, 2]))
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
        as_uint8 = out.mul(255).round().to(torch.uint8)
        # grayscale conversion leaves a gray image (perturbed in one channel) as it was
        assert (grayscale(as_uint8).int() - as_uint8.int()).abs().max() <= 1


def _increasing_inside(x: torch.Tensor) -> torch.Tensor:
    """Per sample: whether the middle row rises left to right (not flipped)."""
    row = x[:, 0, x.shape[2] // 2, 4:-4]
    return (row[:, 1:] > row[:, :-1]).all(1)


def test_crop_never_flips_and_draws_the_same_crops_as_crop_flip():
    x = torch.linspace(0, 1, 32).expand(64, 3, 32, 32).contiguous()
    crop = augment_batch(x, "crop", torch.Generator().manual_seed(0))
    both = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    assert _increasing_inside(crop).all()
    flipped = ~_increasing_inside(both)
    assert 0 < flipped.sum() < 64  # crop_flip does flip some
    assert torch.equal(both[~flipped], crop[~flipped])
    assert torch.equal(both[flipped], crop[flipped].flip(-1))
    assert not torch.equal(crop, x)  # and it does crop


def _context(overrides: dict, meta: dict) -> StageContext:
    cfg = RunConfig.model_validate(overrides)
    return StageContext(cfg, run=None, topology=None, plans={},  # type: ignore[arg-type]
                        _data=ShardSet(root=None, meta=meta))  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides, meta, augment, channels", [
    ({}, {"grayscale": True}, "crop", 1),  # digits
    ({"data": {"dataset": "imagefolder"}}, {"grayscale": False}, "crop_flip", 3),
    ({"data": {"dataset": "medmnist:organamnist"}}, {"grayscale": True}, "crop_flip", 1),
    ({"data": {"augment": "none"}, "train": {"perturbation_channels": 3}}, {"grayscale": True},
     "none", 3),
])
def test_auto_resolves_by_data_set_and_explicit_values_win(overrides, meta, augment, channels):
    ctx = _context(overrides, meta)
    assert ctx.augment == augment and ctx.perturbation_channels == channels
