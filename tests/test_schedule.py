"""Global batch semantics: per-rank batch, accumulation, lr scaling, warmup."""

import math

import numpy as np
import pytest
import torch

from hpcue.config import ConfigError
from hpcue.training.batch_plan import plan_batches
from hpcue.training.lr_schedule import warmup_cosine


def test_per_rank_batch_and_accumulation():
    plan = plan_batches("train", 256, 4, 16, 1e-4, "none", None, 0)
    assert (plan.per_rank_batch_size, plan.micro_batch_size, plan.accumulate_grad_batches) == (
        64, 16, 4)
    assert plan.effective_lr == 1e-4
    plain = plan_batches("train", 256, 4, None, 1e-4, "none", None, 0)
    assert (plain.micro_batch_size, plain.accumulate_grad_batches) == (64, 1)


@pytest.mark.parametrize("rule,factor", [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_rules(rule, factor):
    plan = plan_batches("victim", 1024, 8, None, 0.1, rule, 256, 5)
    assert plan.effective_lr == pytest.approx(0.1 * factor)
    assert plan.as_dict()["lr_scaling"] == rule and plan.warmup_epochs == 5


def test_a_scaled_lr_without_its_base_batch_is_an_error():
    with pytest.raises(ValueError, match="lr_scaling=linear without a base batch"):
        plan_batches("train", 512, 2, None, 0.1, "linear", None, 0)


def test_indivisible_batches_are_config_errors():
    with pytest.raises(ConfigError, match="train.global_batch_size=100 is not divisible by the "
                                          "world size 3"):
        plan_batches("train", 100, 3, None, 1e-3, "none", None, 0)
    with pytest.raises(ConfigError, match="per-rank batch 48 .* not a multiple of "
                                          "runtime.max_micro_batch=20"):
        plan_batches("train", 96, 2, 20, 1e-3, "none", None, 0)


def test_warmup_then_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=20, warmup_steps=4, min_lr=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))


@pytest.mark.parametrize("n, world, global_batch, micro, steps, padded, last", [
    (100, 2, 32, 8, 4, 0, 4),     # 50 a rank, 7 micro-batches, accumulation 2
    (101, 2, 32, 16, 4, 1, 6),    # 51 a rank after one repeat pads rank 1
    (40, 1, 64, 64, 1, 0, 40),    # a batch larger than the data: one short step
])
def test_epoch_shape_is_what_the_loader_runs(n, world, global_batch, micro, steps, padded, last):
    from hpcue.data.loader import IndexedImages, make_loader
    from hpcue.training.batch_plan import epoch_shape

    plan = plan_batches("train", global_batch, world, micro, 0.1, "none", None, 0)
    data = IndexedImages(np.zeros((n, 2, 2, 3), np.uint8), np.zeros(n, np.int64))
    loaders = [make_loader(data, plan.micro_batch_size, shuffle=True, seed=0, rank=r,
                           world_size=world) for r in range(world)]
    seen = sum(len(list(loader.sampler)) for loader in loaders)
    shape = epoch_shape(plan, n, len(loaders[0].sampler), len(loaders[0]))
    assert shape["optimizer_steps_per_epoch"] == steps
    assert shape["images_per_epoch"] == seen == n + padded
    assert shape["padded_repeats_per_epoch"] == padded
    assert shape["images_last_step"] == last
