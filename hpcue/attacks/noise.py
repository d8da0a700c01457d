"""Noise baselines: what a protection must beat, with the same groups (or classes) and eps.

``RandomNoise``: one fixed random pattern per cluster, every pixel at +-eps (where UC's clamped
perturbations mostly sit): the floor UC must beat, since it uses the same clusters and budget
but learns nothing. ``ClassWise``: one fixed random pattern per class; it reads the labels, so it
is a reference for what noise can do when labels are known, not a label-free protection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from hpcue.attacks.base import Attack, AttackInputs, AttackResult


def sign_noise(groups: int, image_size: int, epsilon: float, seed: int,
               channels: int = 3) -> torch.Tensor:
    """G x C x S x S patterns of +-epsilon, drawn from ``seed`` alone."""
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (groups, channels, image_size, image_size), generator=gen)
    return (signs.float() * 2 - 1) * epsilon


@dataclass
class RandomNoise(Attack):
    """Fixed random cluster-wise noise: UC's groups and bound, nothing learned."""

    name: ClassVar[str] = "random"
    uses_labels: ClassVar[bool] = False

    def make(self, inputs: AttackInputs) -> AttackResult:
        return AttackResult(sign_noise(inputs.num_groups, inputs.image_size, inputs.epsilon,
                                       inputs.seed, inputs.channels))


@dataclass
class ClassWise(RandomNoise):
    """Fixed random class-wise noise: the same draw, but ``inputs.groups`` are the labels."""

    name: ClassVar[str] = "classwise"
    uses_labels: ClassVar[bool] = True
