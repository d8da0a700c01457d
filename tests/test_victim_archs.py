"""The victim registry: every architecture a thief might train, at the data's size, ending in
the ``fc`` whose input the contrastive learners and Bayes error read; ``victim.other_archs``
trains them beside victim.arch and the worst case over learners takes them in."""

from __future__ import annotations

import json

import pytest
import torch

from hpcue.config import VICTIM_ARCH_CHOICES
from hpcue.models.victims import VICTIM_ARCHS, build_victim, penultimate
from tests.conftest import hpcue, tiny_sets


def test_the_config_names_every_registered_architecture():
    assert set(VICTIM_ARCH_CHOICES) == set(VICTIM_ARCHS)


@pytest.mark.parametrize("arch", sorted(VICTIM_ARCHS))
@pytest.mark.parametrize("size", [16, 32])
def test_every_architecture_classifies_small_images_and_learns(arch, size):
    """Logits of the right shape from its features, and twelve Adam steps lower the loss on a
    batch it is fitted to (every part is trainable)."""
    torch.manual_seed(0)
    model = build_victim(arch, 5, size)
    y = torch.arange(8) % 5  # the class is the image's brightness: something to learn
    x = 0.1 * torch.rand(8, 3, size, size) + 0.2 * y.view(-1, 1, 1, 1)
    features = penultimate(model.eval(), x)
    assert features.shape == (8, model.fc.in_features)
    torch.testing.assert_close(model.fc(features), model(x))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses


def test_other_architectures_train_beside_the_first_and_join_the_worst_case(tmp_path):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), *tiny_sets(["victim.other_archs=[resnet18_small]",
                                                       "victim.seeds=2",
                                                       "victim.other_archs_seeds=1"]))
    results = json.loads((out / "results.json").read_text())
    victims = results["victims"]
    assert {"resnet18_small:clean", "resnet18_small:uc"} <= set(victims)
    assert "resnet18_small:random" not in victims  # the other archs learn clean and uc only
    assert victims["resnet18_small:uc"]["n"] == 1 and victims["uc"]["n"] == 2
    assert len(results["victim_curves"]["resnet18_small:uc"]) == 1
    drop = results["other_archs"]["resnet18_small"]["uc_below_clean"]["mean"]
    assert drop == pytest.approx(victims["resnet18_small:clean"]["mean"]
                                 - victims["resnet18_small:uc"]["mean"], abs=1e-3)
    learners = {a: victims[a]["mean"] for a in ("uc", "resnet18_small:uc")}
    assert results["worst_case_over_learners"]["learner"] == max(learners, key=learners.get)
    assert "worst case (learners)" in proc.stdout


@pytest.mark.parametrize("bad, says", [
    ("victim.other_archs=[vgg19]", "victim.other_archs"),
    ("victim.other_archs_seeds=7", "victim.other_archs_seeds (7) is more than victim.seeds"),
])
def test_an_impossible_learner_setting_is_one_error(tmp_path, bad, says):
    out = tmp_path / "run"
    proc = hpcue("run", "--out", str(out), "--set", bad, check=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not out.exists()
