"""Baselines, defenses and the victim ensemble: bounds, determinism, documented effects."""

import numpy as np
import pytest
import torch
from PIL import Image

from hpcue.attacks.base import AttackInputs
from hpcue.attacks.noise import ClassWise, RandomNoise
from hpcue.evaluation.defenses import grayscale, jpeg
from hpcue.evaluation.ensemble import VictimEnsemble, identity
from hpcue.evaluation.metrics import seed_summary
from hpcue.models.small_cnn import SmallCNN
from hpcue.stages.evaluate import Noised

EPS = 16 / 255


def _inputs(groups, count, seed=0):
    return AttackInputs(groups=groups, num_groups=count, image_size=16, epsilon=EPS, seed=seed)


@pytest.mark.parametrize("attack", [RandomNoise(), ClassWise()])
def test_noise_baselines_sit_at_the_bound_and_are_seeded(attack):
    deltas = attack.make(_inputs(torch.arange(6) % 3, 3)).deltas
    assert deltas.shape == (3, 3, 16, 16)
    assert torch.allclose(deltas.abs(), torch.full_like(deltas, EPS))  # every pixel at +-eps
    assert torch.equal(deltas, attack.make(_inputs(torch.arange(6) % 3, 3)).deltas)
    assert not torch.equal(deltas, attack.make(_inputs(torch.arange(6) % 3, 3, seed=1)).deltas)
    assert not torch.equal(deltas[0], deltas[1])  # one pattern per group


def test_only_classwise_declares_it_reads_labels():
    assert ClassWise.uses_labels and not RandomNoise.uses_labels


def test_noised_batch_stays_within_eps_in_8_bits():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    groups = torch.tensor([0, 1] * 10)
    deltas = RandomNoise().make(_inputs(groups, 2)).deltas
    ids = torch.arange(3, 11)
    out = Noised(deltas, groups)(images, None, ids)
    assert out.dtype == torch.uint8
    diff = (out.int() - images.int()).abs()
    assert diff.max() <= 16 and diff.float().mean() > 10  # clamped only at 0 and 255


def test_grayscale_is_pil_luma_in_every_channel():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = grayscale(images)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    pil = np.asarray(Image.fromarray(images[0].permute(1, 2, 0).numpy()).convert("L"))
    assert np.abs(out[0, 0].numpy().astype(int) - pil.astype(int)).max() <= 1


def test_jpeg_is_deterministic_and_smooths_pixel_noise():
    gen = torch.Generator().manual_seed(0)
    noise = (torch.randint(0, 2, (4, 3, 32, 32), generator=gen) * 2 - 1) * 16
    images = (128 + noise).to(torch.uint8)  # +-16/255 sign noise on a flat gray image
    out = jpeg(images, 75)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, jpeg(images, 75))
    amplitude = (out.int() - 128).abs().float().mean()
    assert amplitude < 12  # at quality 75 a good part of the +-16 noise is gone


def _ensemble(seeds):
    members = []
    for s in seeds:
        torch.manual_seed(s)
        members.append(SmallCNN(3, width=4))
    module = VictimEnsemble(members, [f"m{s}" for s in seeds], seeds, [identity] * len(seeds),
                            lr=0.1, momentum=0.9, weight_decay=5e-4)
    module.log = lambda *a, **k: None
    return module


def _train(module, batches, steps=3):
    opt = torch.optim.SGD(module.members.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(steps):
        opt.zero_grad()
        module.training_step({n: batches[n] for n in module.names}, step).backward()
        opt.step()


def test_a_member_trains_exactly_as_it_would_alone():
    torch.manual_seed(123)
    batches = {f"m{s}": (torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8),
                         torch.randint(0, 3, (6,)), torch.arange(6)) for s in (0, 1)}
    together, alone = _ensemble([0, 1]), _ensemble([0])
    _train(together, batches)
    _train(alone, batches)
    for a, b in zip(together.members[0].state_dict().values(),
                    alone.members[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(together.members[0].fc.weight, together.members[1].fc.weight)


def test_seed_summary_interval_is_students_t():
    from scipy import stats

    values = [0.5, 0.6, 0.7]
    summary = seed_summary(values)
    low, high = stats.t.interval(0.95, 2, loc=0.6, scale=stats.sem(values))
    assert summary["mean"] == 0.6 and summary["n"] == 3
    assert summary["ci95"] == pytest.approx([low, high], abs=1e-4)
    assert seed_summary([0.5])["ci95"] is None and seed_summary([0.5])["std"] == 0.0
