"""The LightningModule that trains all K cluster generators in one pass over the data."""

from __future__ import annotations

import lightning as L
import torch

from hpcue.attacks.base import perturb
from hpcue.attacks.uc.objective import target_clusters, uc_loss
from hpcue.models.generator import ClusterGenerators
from hpcue.models.surrogate import Surrogate
from hpcue.training.batches import UnitBatches
from hpcue.training.lr_schedule import scheduled


class UCModule(UnitBatches, L.LightningModule):
    """Generators are the only parameters; the surrogate is held outside the module tree.

    Keeping the surrogate out of ``children()`` means DDP neither wraps nor all-reduces it and
    checkpoints hold only what is trained. Cluster ids are looked up by each sample's global
    index, so any sampler (shuffled, sharded across ranks) keeps images and clusters aligned.
    """

    def __init__(self, generators: ClusterGenerators, surrogate: Surrogate,
                 centers: torch.Tensor, assignments: torch.Tensor, *, offset: int, lr: float,
                 weight_decay: float, min_lr: float, augment: str = "none",
                 warmup_epochs: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.generators = generators
        object.__setattr__(self, "surrogate", surrogate)
        self.centers = centers.float()
        self.assignments = assignments.long()
        self.offset, self.lr, self.weight_decay, self.min_lr = offset, lr, weight_decay, min_lr
        self.augment, self.augment_seed, self.warmup_epochs = augment, seed, warmup_epochs

    def on_fit_start(self) -> None:
        self.surrogate.to(self.device).eval()
        self.centers = self.centers.to(self.device)
        self.assignments = self.assignments.to(self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _labels, index = batch
        images = self.augmented(images, batch_idx)
        clusters = self.assignments[index]
        perturbed = perturb(images, self.generators(), clusters)
        features = self.surrogate(perturbed)
        targets = target_clusters(clusters, self.offset, len(self.centers))
        loss = uc_loss(features, self.centers, targets)
        self.log("uc_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(images), sync_dist=False)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.generators.parameters(), lr=self.lr,
                               weight_decay=self.weight_decay)
        return scheduled(opt, self.trainer, self.warmup_epochs, self.min_lr)
