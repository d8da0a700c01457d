"""Global batch semantics: per-rank batch, accumulation and learning-rate scaling.

Configs name the global batch size, the quantity the study sweeps. The per-rank batch follows
from the world size; a per-device micro-batch limit turns the rest into gradient accumulation,
so the optimisation is the same on 1 or 600 GPUs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hpcue.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    global_batch_size: int
    world_size: int
    per_rank_batch_size: int
    micro_batch_size: int
    accumulate_grad_batches: int
    lr_scaling: str
    base_lr: float
    effective_lr: float
    warmup_epochs: float
    section: str = ""
    #: micro batches tried by ``runtime.max_micro_batch: auto`` (empty: not probed)
    micro_batch_tried: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps an epoch of ``batches`` micro-batches takes, ``accumulate`` a step (the
    last step takes what is left): the count Lightning, the lr schedule and stage 1's fixed
    number of steps all use."""
    return math.ceil(batches / accumulate)


def epoch_shape(plan: BatchPlan, num_train: int, samples_per_rank: int,
                batches_per_rank: int) -> dict:
    """What one epoch really runs, from the loader: optimizer steps, images a step, and how many
    samples are repeats padding the ranks to equal length (a nominal batch records none of it)."""
    steps = steps_per_epoch(batches_per_rank, plan.accumulate_grad_batches)
    images = samples_per_rank * plan.world_size
    return {"num_train": num_train, "optimizer_steps_per_epoch": steps,
            "images_per_epoch": images, "padded_repeats_per_epoch": images - num_train,
            "images_per_full_step": min(plan.global_batch_size, images),
            "images_last_step": images - (steps - 1) * plan.global_batch_size}


def plan_batches(section: str, global_batch: int, world_size: int, max_micro: int | None,
                 lr: float, lr_scaling: str, base_batch: int | None,
                 warmup_epochs: float) -> BatchPlan:
    """How one training (stage 1 or a victim) splits its global batch over the ranks."""
    if global_batch % world_size:
        raise ConfigError(f"{section}.global_batch_size={global_batch} is not divisible by the "
                          f"world size {world_size}")
    per_rank = global_batch // world_size
    micro = per_rank if max_micro is None else min(per_rank, max_micro)
    if per_rank % micro:
        raise ConfigError(f"{section}: per-rank batch {per_rank} (global {global_batch} / "
                          f"{world_size} ranks) is not a multiple of runtime.max_micro_batch="
                          f"{max_micro}")
    if lr_scaling != "none" and base_batch is None:  # the config refuses it; a guard for callers
        raise ValueError(f"lr_scaling={lr_scaling} without a base batch would not scale")
    ratio = global_batch / (base_batch or global_batch)
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[lr_scaling]
    return BatchPlan(global_batch, world_size, per_rank, micro, per_rank // micro, lr_scaling,
                     lr, lr * factor, warmup_epochs, section)
