"""The LightningModule that trains all K cluster generators in one pass over the data."""

from __future__ import annotations

import lightning as L
import torch

from hpcue.attacks.base import perturb
from hpcue.attacks.uc.objective import kl_to_targets, per_cluster_weights, target_clusters
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
        self._present: torch.Tensor | None = None  # clusters seen since the last step

    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _global_counts(self, clusters: torch.Tensor) -> torch.Tensor:
        """How many images of each cluster this step's batch holds, over every rank."""
        counts = torch.bincount(clusters, minlength=len(self.centers)).double()
        if self._world() > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        return counts

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
        kl = kl_to_targets(features, self.centers, targets)
        counts = self._global_counts(clusters)
        present = counts > 0
        self._present = present if self._present is None else self._present | present
        loss = (kl * per_cluster_weights(clusters, counts, self._world()).to(kl.dtype)).sum()
        self.log("uc_loss", kl.mean().detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(images), sync_dist=False)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """A generator whose cluster had no image in this step is not stepped: no decay, no
        momentum drift (every rank knows the same global counts)."""
        if self._present is not None:
            for k, generator in enumerate(self.generators.generators):
                if not self._present[k]:
                    for p in generator.parameters():
                        p.grad = None
        self._present = None

    def configure_optimizers(self):
        # decoupled decay: it must not scale with a cluster's share of the batch
        opt = torch.optim.AdamW(self.generators.parameters(), lr=self.lr,
                                weight_decay=self.weight_decay)
        return scheduled(opt, self.trainer, self.warmup_epochs, self.min_lr)
