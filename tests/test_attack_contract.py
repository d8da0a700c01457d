"""The contract between the train stage and an attack that trains (attacks/base.py): the
stage gives a ``Fit`` and the world size, the attack gives ``fit`` a builder of its module;
attacks are found by name in one registry."""

import pytest
import torch

from hpcue.attacks.base import Attack, AttackInputs, AttackModule
from hpcue.attacks.noise import ClassWise, RandomNoise
from hpcue.attacks.registry import ATTACKS, attack_class
from hpcue.attacks.uc.attack import UnlearnableClusters
from hpcue.attacks.uc.module import UCModule
from hpcue.config import RunConfig
from hpcue.errors import ConfigError
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import Surrogate


def test_the_registry_holds_every_attack_by_its_name():
    assert {n: ATTACKS[n] for n in ("uc", "random", "classwise")} == {
        "uc": UnlearnableClusters, "random": RandomNoise, "classwise": ClassWise}
    assert set(ATTACKS) == {"uc", "random", "classwise", "em_samplewise", "em_classwise", "aue",
                            "aap", "bayes_error"}
    assert all(issubclass(cls, Attack) for cls in ATTACKS.values())
    # only UC and random noise are label-free
    assert {n for n in ATTACKS if not attack_class(n).uses_labels} == {"uc", "random"}
    with pytest.raises(ConfigError, match=r"unknown attack 'rando'.*did you mean 'random'"):
        attack_class("rando")


def test_configured_reads_the_run_config_and_a_training_attack_needs_the_plans_lr():
    cfg = RunConfig.model_validate({"train": {"generator_parallel": "shard", "bound": "scale"}})
    uc = attack_class("uc").configured(cfg, lr=0.25, augment="flip")
    assert (uc.lr, uc.augment, uc.generator_parallel, uc.bound) == (0.25, "flip", "shard",
                                                                    "scale")
    assert isinstance(attack_class("random").configured(cfg), RandomNoise)
    with pytest.raises(TypeError, match="learning rate"):
        attack_class("uc").configured(cfg)


def _inputs(fit, world_size):
    torch.manual_seed(0)
    return AttackInputs(groups=torch.tensor([0, 1, 2, 0, 1, 2]), num_groups=3, image_size=16,
                        epsilon=8 / 255, seed=3, centers=torch.randn(3, 32),
                        surrogate=Surrogate(SmallCNN(10, width=8)), loader=[], fit=fit,
                        world_size=world_size)


@pytest.mark.parametrize(("parallel", "world_size", "steps_itself"), [
    ("auto", 1, False), ("auto", 2, True), ("replicate", 2, False), ("shard", 1, True)])
def test_uc_builds_its_module_for_the_stages_accumulation_and_says_who_steps(
        parallel, world_size, steps_itself):
    built: list[UCModule] = []

    def fit(build, batches):
        first, second = build(1), build(4)  # the planned, then the probed micro batch
        built.extend([first, second])
        return second

    uc = UnlearnableClusters(width=4, blocks=1, bound="clamp", target_offset=1, lr=1e-3,
                             weight_decay=0.0, min_lr=0.0, generator_parallel=parallel)
    result = uc.make(_inputs(fit, world_size))
    assert all(isinstance(m, AttackModule) for m in built)
    assert [m.accumulate for m in built] == [1, 4]
    assert [m.steps_itself for m in built] == [steps_itself] * 2
    # the module is built the same each time: the deltas do not depend on which build trained
    assert torch.equal(built[0].generators(), built[1].generators())
    assert torch.equal(result.deltas, built[1].generators().detach())
    assert result.deltas.shape == (3, 3, 16, 16)
    assert result.record["generator_parallel"] == ("shard" if steps_itself else "replicate")
    assert result.record["bytes_per_step"] == 0  # nothing trained, nothing sent


def test_uc_refuses_inputs_without_a_fit():
    uc = UnlearnableClusters(width=4, blocks=1, bound="clamp", target_offset=1, lr=1e-3,
                             weight_decay=0.0, min_lr=0.0)
    with pytest.raises(TypeError, match="fit function"):
        uc.make(_inputs(None, 1))
