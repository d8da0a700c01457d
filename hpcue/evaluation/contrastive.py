"""Contrastive learners as victims (the threat AUE/AAP measure): each learns its training set's
images without labels, SimCLR or BYOL with lightly's losses and heads on two views of the strong
augmentation (training/views.py at strength 1, SimCLR's), and a linear probe on its features
learns the labels; the probe's accuracy on the clean test set is the learner's.

The probe is trained online, beside the encoder, on detached features (solo-learn's online
linear evaluation), not afterwards on frozen features as AUE/AAP's offline probe is: one
training for every learner, and every parameter has a gradient at every step, as DDP needs.
``ContrastiveEnsemble`` steps every (method, training set, seed) learner in one Lightning
training and counts their test answers as ``VictimEnsemble`` does (curves, per-image outcomes).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from hpcue.config import CONTRASTIVE_CHOICES
from hpcue.data.tensors import to_unit
from hpcue.evaluation.ensemble import BatchTransform, VictimEnsemble
from hpcue.training.batches import seeded_generator
from hpcue.training.lr_schedule import scheduled
from hpcue.training.views import seeded, strong_augmentation

#: what ``victim.contrastive`` may name
METHODS = CONTRASTIVE_CHOICES
#: the projection's output width; SimCLR's temperature (lightly's examples: 0.5 on CIFAR)
PROJECTION_DIM, TEMPERATURE = 128, 0.5
#: BYOL's target network follows the online one at a momentum from this to 1 (cosine)
BYOL_MOMENTUM = 0.99
#: the online probe's SGD lr (no weight decay), the encoders' is ``victim.contrastive_lr``
PROBE_LR = 0.1


class ContrastiveLearner(nn.Module):
    """An encoder (a victim architecture, its ``fc`` removed), the method's heads, and the
    linear probe; ``forward`` is the probe on the encoder's features (what the test counts)."""

    def __init__(self, method: str, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown contrastive method {method!r}: expected one of {METHODS}")
        width = encoder.fc.in_features  # the features its classifier read
        encoder.fc = nn.Identity()
        self.method, self.encoder = method, encoder
        self.probe = nn.Linear(width, num_classes)
        if method == "simclr":
            self.projection: nn.Module = SimCLRProjectionHead(width, width, PROJECTION_DIM)
            self.criterion: nn.Module = NTXentLoss(TEMPERATURE)
        else:
            self.projection = BYOLProjectionHead(width, 4 * width, PROJECTION_DIM)
            self.prediction = BYOLPredictionHead(PROJECTION_DIM, 4 * width, PROJECTION_DIM)
            self.target_encoder = copy.deepcopy(encoder)
            self.target_projection = copy.deepcopy(self.projection)
            deactivate_requires_grad(self.target_encoder)
            deactivate_requires_grad(self.target_projection)
            self.criterion = NegativeCosineSimilarity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder(x))

    def follow(self, momentum: float) -> None:
        """BYOL: the target network moves toward the online one (nothing for SimCLR)."""
        if self.method == "byol":
            update_momentum(self.encoder, self.target_encoder, momentum)
            update_momentum(self.projection, self.target_projection, momentum)

    def losses(self, v0: torch.Tensor, v1: torch.Tensor,
               labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the method's loss on the two views, the probe's cross-entropy on the first view's
        detached features)."""
        f0, f1 = self.encoder(v0), self.encoder(v1)
        if self.method == "simclr":
            ssl = self.criterion(self.projection(f0), self.projection(f1))
        else:
            p0, p1 = (self.prediction(self.projection(f)) for f in (f0, f1))
            with torch.no_grad():
                t0, t1 = (self.target_projection(self.target_encoder(v)) for v in (v0, v1))
            ssl = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return ssl, F.cross_entropy(self.probe(f0.detach()), labels)


class ContrastiveEnsemble(VictimEnsemble):
    """Every contrastive learner in one training; the views of member m's batch are drawn from
    (its seed, epoch, step, rank), so a resumed run draws the same ones."""

    def __init__(self, members: Sequence[ContrastiveLearner], names: Sequence[str],
                 seeds: Sequence[int], transforms: Sequence[BatchTransform], *, lr: float,
                 momentum: float, weight_decay: float, image_size: int,
                 num_test: int = 0) -> None:
        super().__init__(members, names, seeds, transforms, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, num_test=num_test)
        self.views = strong_augmentation(image_size, 1.0)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total = max(1, int(self.trainer.estimated_stepping_batches))
        momentum = cosine_schedule(self.global_step, total, BYOL_MOMENTUM, 1.0)
        ssl_losses, probe_losses = [], []
        for m, (member, name) in enumerate(zip(self.members, self.names, strict=True)):
            images, labels, ids = batch[name]
            x = to_unit(self.transforms[m](images, labels, ids))
            gen = seeded_generator([self.seeds[m], self.current_epoch, batch_idx,
                                    self.global_rank, 3], x.device)
            v0, v1 = seeded(self.views, x, gen), seeded(self.views, x, gen)
            member.follow(momentum)
            ssl, probe = member.losses(v0, v1, labels)
            ssl_losses.append(ssl)
            probe_losses.append(probe)
        ssl, probe = torch.stack(ssl_losses), torch.stack(probe_losses)
        size = len(batch[self.names[0]][0])
        self.log("contrastive_loss_mean", ssl.mean(), prog_bar=True, on_step=True,
                 on_epoch=True, batch_size=size)
        self.log("probe_loss_mean", probe.mean(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=size)
        return ssl.sum() + probe.sum()

    def configure_optimizers(self):
        probes = [p for member in self.members for p in member.probe.parameters()]
        ids = {id(p) for p in probes}
        rest = [p for p in self.members.parameters() if p.requires_grad and id(p) not in ids]
        opt = torch.optim.SGD([{"params": rest, "lr": self.lr,
                                "weight_decay": self.weight_decay},
                               {"params": probes, "lr": PROBE_LR, "weight_decay": 0.0}],
                              lr=self.lr, momentum=self.momentum)
        return scheduled(opt, self.trainer, 0.0, 0.0)
