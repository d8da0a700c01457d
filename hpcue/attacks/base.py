"""The interface every attack implements, and the one way a perturbation is applied.

An attack makes G bounded perturbations (deltas) and says which one each training image gets
(its group: a cluster for UC, a class for class-wise noise, the image itself for sample-wise
attacks). The generate stage applies them the same way for every attack, so the unlearnable set,
its preview and its evaluation never depend on which attack made the deltas.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn


def perturb(images: torch.Tensor, deltas: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """clamp(x + delta_g(x), 0, 1): each image gets its own group's perturbation (a one-channel
    delta changes R, G and B alike)."""
    return (images + deltas[groups]).clamp(0.0, 1.0)


@dataclass
class AttackInputs:
    """What an attack may use; each takes what it needs and leaves the rest unset.

    ``fit`` runs a LightningModule through the run's Trainer (topology, checkpoints, resume), so
    an attack that trains knows nothing of launchers or run directories.
    """

    groups: torch.Tensor                  # N: the group of every training image, by global id
    num_groups: int
    image_size: int
    epsilon: float                        # L-inf bound, pixel scale [0, 1]
    seed: int
    channels: int = 3                     # of each delta: 3, or 1 for a gray data set
    centers: torch.Tensor | None = None   # cluster centers in the surrogate's feature space
    surrogate: nn.Module | None = None    # frozen, [0, 1] images in, features out
    loader: Any = None                    # this rank's training batches (uint8, labels, ids)
    fit: Callable[[L.LightningModule, Any], None] | None = None


@dataclass
class AttackResult:
    deltas: torch.Tensor                  # G x C x H x W (C: 3 or 1), |delta| <= epsilon
    state: dict[str, Any] = field(default_factory=dict)  # what reproduces them (weights)
    record: dict[str, Any] = field(default_factory=dict)  # figures for the stage's record


class Attack(ABC):
    """One way to make data unlearnable."""

    name: ClassVar[str]
    #: the threat model: whether the attack sees the protected set's labels
    uses_labels: ClassVar[bool]

    @abstractmethod
    def make(self, inputs: AttackInputs) -> AttackResult:
        """The G perturbations for ``inputs.groups``."""
