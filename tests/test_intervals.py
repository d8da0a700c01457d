"""Intervals that cannot claim more than the data hold, and the verdict read off them."""

import numpy as np
import pytest
import torch

from hpcue.evaluation.metrics import pooled_summary, sampling_variance, seed_summary
from hpcue.evaluation.verdict import MARGIN, level, verdict


def test_identical_seeds_never_give_a_zero_width_interval():
    """The issue's case: three victims each got one more of 450 test images right."""
    uc = torch.ones(3, 450, dtype=torch.bool)
    rand = uc.clone()
    for seed, image in enumerate((5, 17, 300)):
        uc[seed, image] = False
    diffs = [1 / 450] * 3
    outcome = rand.float() - uc.float()
    summary = seed_summary(diffs, sampling_variance(outcome), 450, bounds=(-1, 1))
    low, high = summary["ci95"]
    assert high - low > 0.005 and low < 0 < high  # one image each: not a certain difference
    assert summary["n"] == 3 and summary["n_test_images"] == 450 and summary["test_se"] > 0
    assert seed_summary(diffs)["ci95"][0] == seed_summary(diffs)["ci95"][1]  # seeds alone: 0


def test_sampling_variance_is_the_bootstrap_over_test_images():
    gen = np.random.default_rng(0)
    outcomes = torch.from_numpy(gen.random((3, 400)) < 0.7)
    boot = [outcomes[:, gen.integers(0, 400, 400)].double().mean().item() for _ in range(4000)]
    assert sampling_variance(outcomes) == pytest.approx(np.var(boot), rel=0.1)
    assert sampling_variance(torch.ones(3, 400)) == 0.0


def test_accuracy_intervals_stay_within_zero_and_one():
    summary = seed_summary([0.99, 1.0, 1.0], sampling_variance(torch.ones(3, 30)), 30)
    assert summary["ci95"][1] <= 1.0
    wide = seed_summary([0.2, 0.9], 0.01, 30)
    assert wide["ci95"][0] >= 0.0 and wide["ci95"][1] <= 1.0


def test_pooled_runs_keep_every_seed_and_the_larger_test_term():
    a = seed_summary([0.5, 0.6, 0.7], 0.0001, 450)
    b = seed_summary([0.55, 0.65, 0.6], 0.0004, 450)
    pooled = pooled_summary([a, b])
    assert pooled["n"] == 6 and pooled["per_seed"] == a["per_seed"] + b["per_seed"]
    assert pooled["test_se"] == pytest.approx((0.00025) ** 0.5, abs=1e-5)
    assert pooled["n_test_images"] == 450


def _results(adv_seeds, worst="uc+jpeg10", worst_adv=(0.3, 0.3, 0.3)):
    adv = seed_summary(list(adv_seeds), 0.0001, 450, bounds=(-1, 1))
    return {"unlearnable_test_acc": 0.55, "clean_test_acc": 0.98,
            "uc_below_clean": seed_summary([0.43, 0.42, 0.44], 0.0001, 450, bounds=(-1, 1)),
            "uc_advantage_over_random": adv,
            "baselines": {"random": {"mean": 0.9}},
            "victims": {"uc": {"mean": 0.55}, worst: {"mean": 0.6}},
            "worst_case_defense": worst,
            "worst_case_advantage_over_random": seed_summary(list(worst_adv), 0.0001, 450,
                                                             bounds=(-1, 1)),
            "defenses": {"jpeg10": {"what": "JPEG at quality 10"}}}


def test_verdict_levels_follow_the_paired_interval_against_random():
    assert level(_results([0.35, 0.4, 0.38])) == "protected"
    assert level(_results([MARGIN / 2, MARGIN / 2 + 0.01, MARGIN / 2 - 0.01])) == "weak"
    assert level(_results([0.4, -0.2, 0.2])) == "uncertain"
    # a mean under the margin but an interval reaching past it: not decided either way
    assert level(_results([0.0, 0.25, -0.05, 0.30, 0.0, 0.05])) == "uncertain"
    assert level(_results([0.01, -0.01, 0.0])) == "not protected"
    one_seed = _results([0.4])
    assert level(one_seed) == "undecided"
    no_random = _results([0.4, 0.4, 0.4])
    no_random["uc_advantage_over_random"] = None
    assert level(no_random) == "undecided"


def test_verdict_words_name_the_figures_and_the_defense_that_undoes_most():
    text = " ".join(verdict(_results([0.35, 0.4, 0.38]))["text"])
    assert text.startswith("Verdict: PROTECTED.")
    assert "scores 0.55" in text and "0.98" in text and "0.90" in text
    assert "JPEG at quality 10" in text and "scores 0.60 (without it 0.55)" in text
    # random noise without the countermeasure against UC with it: never "still protected"
    assert "below random" not in text and "do not count" not in text
    undone = " ".join(verdict(_results([0.35, 0.4, 0.38], worst_adv=(-0.05, -0.04, -0.06)))
                      ["text"])
    assert "as well as from random noise (surely within 10 points): do not count" in undone
    near_clean = _results([0.35, 0.4, 0.38])
    near_clean["worst_case_below_clean"] = seed_summary([0.02, 0.03, 0.01], 0.0001, 450,
                                                        bounds=(-1, 1))
    text = " ".join(verdict(near_clean)["text"])
    assert "as well as from the originals (surely within 10 points): do not count" in text
    worse = " ".join(verdict(_results([-0.05, -0.04, -0.06]))["text"])
    assert "5 points worse than noise" in worse and "NOT PROTECTED" in worse


def test_a_tiny_test_set_keeps_intervals_within_bounds_and_says_they_are_rough():
    """The issue's case: 30 test images, clean per seed 1.0, 0.833, 1.0 (± 0.096), once given
    as [0.705, 1.183]; and no word that 30 images make a rough interval."""
    from hpcue.evaluation.metrics import SMALL_TEST_SET, interval_warnings
    from hpcue.stages.evaluate import paired, summaries

    right = torch.ones(3, 30, dtype=torch.bool)
    right[1, :5] = False  # seed 1 got 25 of 30
    wrong = torch.zeros(3, 30, dtype=torch.bool)
    rows = {"clean": right, "uc": wrong}
    per_arm = {"clean": [1.0, 25 / 30, 1.0], "uc": [0.0, 0.0, 0.0]}
    clean = summaries(per_arm, rows)["clean"]
    assert clean["std"] == pytest.approx(0.0962, abs=1e-4) and clean["n_test_images"] == 30
    low, high = clean["ci95"]
    assert 0.0 <= low < clean["mean"] < high <= 1.0 and high == 1.0  # clipped, not 1.183
    assert summaries({"uc": [0.0, 0.0, 0.0]}, {"uc": wrong})["uc"]["ci95"] == [0.0, 0.0]
    low, high = paired(per_arm, rows, "clean", "uc")["ci95"]
    assert -1.0 <= low < high <= 1.0 and high == 1.0
    (warning,) = interval_warnings(30)
    assert "30 images" in warning and f"under {SMALL_TEST_SET}" in warning
    assert "normal approximation" in warning
    assert interval_warnings(SMALL_TEST_SET) == [] and interval_warnings(450) == []
