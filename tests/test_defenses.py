"""The countermeasures beside UC: data defenses (JPEG 10, bit depth) and training ones (Cutout,
MixUp, CutMix, PGD adversarial training), each seeded and recorded with whose values it has."""

import pytest
import torch
import torch.nn.functional as F

from hpcue.config import DEFENSE_CHOICES, load_config
from hpcue.errors import ConfigError
from hpcue.evaluation.defenses import DEFENSES, bit_depth, jpeg
from hpcue.evaluation.ensemble import VictimEnsemble, identity
from hpcue.evaluation.training_defenses import build, cutout, pgd
from hpcue.models.small_cnn import SmallCNN


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_every_config_name_is_a_defense_with_its_values_and_source():
    assert set(DEFENSE_CHOICES) == set(DEFENSES)
    for name, d in DEFENSES.items():
        record = d.as_record()
        assert record["kind"] in ("data", "training") and record["source"], name
    assert DEFENSES["jpeg10"].params == {"quality": 10}
    assert DEFENSES["bitdepth"].params == {"bits": 2}
    assert DEFENSES["adversarial"].params["epsilon"] == pytest.approx(8 / 255)
    with pytest.raises(ConfigError, match="listed more than once: cutout"):
        load_config(None, ["victim.defenses=[cutout, cutout]"])
    with pytest.raises(ConfigError, match="victim.defenses"):
        load_config(None, ["victim.defenses=[jpeg5]"])


def test_jpeg_at_quality_10_removes_more_noise_than_at_75():
    torch.manual_seed(0)
    noise = (torch.randint(0, 2, (4, 1, 32, 32)) * 32 - 16).expand(4, 3, 32, 32)
    images = (128 + noise).to(torch.uint8)
    left = {q: (jpeg(images, q).int() - 128).abs().float().mean() for q in (10, 75)}
    assert left[10] < left[75] < 16


def test_bit_depth_keeps_the_two_highest_bits():
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    out = DEFENSES["bitdepth"].data_transform()(images)
    assert torch.equal(out, images & 0b11000000)
    assert set(out.unique().tolist()) == {0, 64, 128, 192}
    assert torch.equal(bit_depth(images, 8), images)


def test_cutout_zeroes_one_half_side_square_per_image_from_the_generator():
    x = torch.ones(64, 3, 16, 16)
    out = cutout(x, 8, _gen())
    zeroed = (out[:, 0] == 0).flatten(1).sum(1)
    assert (zeroed <= 64).all() and (zeroed > 0).all() and (zeroed == 64).any()
    assert torch.equal(out[:, 0], out[:, 2])  # the same square in every channel
    assert torch.equal(out, cutout(x, 8, _gen())) and not torch.equal(out, cutout(x, 8, _gen(1)))
    step = build(DEFENSES["cutout"], 10)
    images, targets = step(x, torch.zeros(64, dtype=torch.long), None, _gen())
    assert torch.equal(images, out) and targets.dtype == torch.long


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_gives_class_probabilities_seeded_without_touching_the_global_stream(name):
    x, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 10
    step = build(DEFENSES[name], 10)
    before = torch.get_rng_state()
    images, targets = step(x, labels, None, _gen())
    assert torch.equal(torch.get_rng_state(), before)
    assert targets.shape == (8, 10) and torch.allclose(targets.sum(1), torch.ones(8))
    assert not torch.equal(targets, F.one_hot(labels, 10).float())  # labels were mixed
    again = step(x, labels, None, _gen())
    assert torch.equal(images, again[0]) and torch.equal(targets, again[1])


def test_pgd_stays_in_the_ball_raises_the_loss_and_leaves_the_model_training():
    torch.manual_seed(0)
    model = SmallCNN(10, width=4).train()
    x, labels = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    adv = pgd(model, x, labels, 8 / 255, 0.007, 10, _gen())
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(adv), labels) > F.cross_entropy(model(x), labels)
    model.train()
    step = build(DEFENSES["adversarial"], 10)
    step(x, labels, model, _gen())
    assert model.training and all(p.grad is None for p in model.parameters())


def test_a_training_defense_changes_only_its_own_member():
    torch.manual_seed(0)
    members = [SmallCNN(3, width=4) for _ in range(2)]
    members[1].load_state_dict(members[0].state_dict())
    module = VictimEnsemble(members, ["plain", "cut"], [0, 0], [identity, identity], lr=0.1,
                            momentum=0.9, weight_decay=0.0,
                            train_defenses=[None, build(DEFENSES["cutout"], 3)])
    module.log = lambda *a, **k: None
    batch = (torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8), torch.arange(6) % 3,
             torch.arange(6))
    x_plain, _ = module._train_batch(0, batch, 0)
    x_cut, _ = module._train_batch(1, batch, 0)
    assert torch.equal(x_plain, batch[0].float() / 255)
    assert (x_cut == 0).sum() > (x_plain == 0).sum()
