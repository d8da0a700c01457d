"""Sharpness-aware learnability and the Unlearnable Distance (evaluation/sharpness.py): UD is 0
for a model against itself and grows as a victim's high-SAL layers depart from the clean one's;
SAL is the loss change one layer's bounded move can make."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcue.evaluation.sharpness import layer_names, layer_sal, threshold, unlearnable_distance
from hpcue.models.small_cnn import SmallCNN


def test_ud_is_zero_against_itself_and_grows_with_a_poisoned_model():
    clean = np.array([[4.0, 3.5, 3.8, 0.2, 0.1], [4.2, 3.1, 3.9, 0.3, 0.1]])
    same = unlearnable_distance(clean, clean)
    assert same["ratio"] == 1.0 and same["ud"] == 0.0
    assert same["threshold"] == pytest.approx(threshold(clean))
    assert 0.2 < same["threshold"] < 3.1  # between the two groups of layers
    fewer = unlearnable_distance(clean, np.array([[4.0, 0.5, 0.4, 0.2, 0.1]] * 2))
    none = unlearnable_distance(clean, np.full((2, 5), 0.1))
    assert 0 < fewer["ud"] < none["ud"] == 1.0
    assert fewer["high_sal_layers"] == 1.0 and fewer["clean_high_sal_layers"] == 3.0
    more = unlearnable_distance(clean, np.full((2, 5), 5.0))
    assert more["ud"] == pytest.approx(2 / 3)
    # a clean model with no layer above its own cut (every layer alike) has no ratio
    flat = unlearnable_distance(np.full((2, 5), 1.0), clean, cut=10.0)
    assert flat["ratio"] is None and flat["ud"] is None


def test_sal_is_the_loss_change_of_one_layer_moved_within_its_ball():
    torch.manual_seed(0)
    model = SmallCNN(4, width=8)
    x, y = torch.rand(32, 3, 8, 8), torch.arange(32) % 4

    def batches():
        return [(x[:16], y[:16]), (x[16:], y[16:])]

    assert layer_names(model) == ["body.0.0.weight", "body.1.0.weight", "body.3.0.weight",
                                  "body.5.0.weight", "fc.weight"]
    tiny = layer_sal(model, batches, iterations=2, radius=1e-6, lr=5.0)
    wide = layer_sal(model, batches, iterations=2, radius=0.5, lr=5.0)
    assert len(tiny) == len(wide) == 5 and min(tiny) >= 0
    assert 100 * max(tiny) < min(wide), (tiny, wide)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
