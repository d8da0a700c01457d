"""The interface every attack implements, and the one way a perturbation is applied.

An attack makes G bounded perturbations (deltas) and says which one each training image gets
(its group: a cluster for UC, a class for class-wise noise, the image itself for sample-wise
attacks). The generate stage applies them the same way for every attack, so the unlearnable set,
its preview and its evaluation never depend on which attack made the deltas.

An attack that trains does so through the run's Trainer, and the two sides meet only in the
types below: the stage gives ``AttackInputs.fit`` (a ``Fit``) and the world size; the attack
gives ``fit`` a ``BuildModule``, which makes its ``AttackModule`` for the number of
micro-batches one optimizer step takes. Nothing else passes between them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import lightning as L
import torch
from torch import nn

from hpcue.config import RunConfig


def perturb(images: torch.Tensor, deltas: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """clamp(x + delta_g(x), 0, 1): each image gets its own group's perturbation (a one-channel
    delta changes R, G and B alike)."""
    return (images + deltas[groups]).clamp(0.0, 1.0)


class AttackModule(L.LightningModule):
    """The LightningModule of an attack that trains, as the stage's Trainer runs it."""

    @property
    def epochs(self) -> int | None:
        """The epochs this module needs, or None: the run's ``train.epochs``."""
        return None

    @property
    def steps_itself(self) -> bool:
        """True: the module steps its own optimizers (manual optimization, its own gradient
        reduction, one step every ``accumulate`` micro-batches it was built for), so the
        Trainer accumulates nothing and does not wrap it in DDP. False: Lightning's automatic
        optimization, accumulation and DDP do it all."""
        return False


class BuildModule(Protocol):
    """The attack's side: its module for ``accumulate`` micro-batches per optimizer step (the
    stage may build twice: once at the planned micro batch, again if the micro-batch probe
    settles on a smaller one)."""

    def __call__(self, accumulate: int) -> AttackModule: ...


class Fit(Protocol):
    """The stage's side: builds the module at the run's batch plan, trains it on ``batches``
    (or smaller ones the probe chose) with the run's Trainer (topology, precision,
    checkpoints, resume), and returns the trained module."""

    def __call__(self, build: BuildModule, batches: Iterable) -> AttackModule: ...


@dataclass
class AttackInputs:
    """What an attack may use; each takes what it needs and leaves the rest unset."""

    groups: torch.Tensor                  # N: the group of every training image, by global id
    num_groups: int
    image_size: int
    epsilon: float                        # L-inf bound, pixel scale [0, 1]
    seed: int
    channels: int = 3                     # of each delta: 3, or 1 for a gray data set
    centers: torch.Tensor | None = None   # cluster centers in the surrogate's feature space
    surrogate: nn.Module | None = None    # frozen, [0, 1] images in, features out
    loader: Iterable | None = None        # this rank's training batches (uint8, labels, ids)
    fit: Fit | None = None                # the run's Trainer, for an attack that trains
    world_size: int = 1                   # ranks that run ``fit`` together
    rank: int = 0
    labels: torch.Tensor | None = None    # N: every training image's class, by global id
    num_classes: int | None = None


@dataclass
class AttackResult:
    deltas: torch.Tensor                  # G x C x H x W (C: 3 or 1), |delta| <= epsilon
    state: dict[str, Any] = field(default_factory=dict)  # what reproduces them (weights)
    record: dict[str, Any] = field(default_factory=dict)  # figures for the stage's record
    # N: which delta each training image gets, when not ``inputs.groups`` (sample-wise: itself;
    # class-wise: its class); saved with the deltas, so generate applies them the same way
    groups: torch.Tensor | None = None


class Attack(ABC):
    """One way to make data unlearnable; registered by ``name`` in attacks/registry.py."""

    name: ClassVar[str]
    #: the threat model: whether the attack sees the protected set's labels
    uses_labels: ClassVar[bool]

    @classmethod
    def configured(cls, cfg: RunConfig, *, lr: float | None = None,
                   augment: str = "none") -> Attack:
        """This attack as the run's config sets it; an attack that trains also takes the batch
        plan's (scaled) ``lr`` and the resolved ``augment``."""
        return cls()

    @property
    def owns_images(self) -> bool:
        """True: one delta per image, kept on the rank that owns the image; the stage then
        gives it each global batch's owned part (data/loader.py ``OwnedBatches``)."""
        return False

    @property
    def splits_batches(self) -> bool:
        """True: its module takes each rank's whole share of a global batch and splits it into
        ``accumulate`` micro-batches itself (the stage loads whole shares and probes nothing)."""
        return False

    @abstractmethod
    def make(self, inputs: AttackInputs) -> AttackResult:
        """The G perturbations for ``inputs.groups``."""
