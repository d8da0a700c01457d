"""Supervised training for victims (and the debug surrogate): SGD, cosine, exact test accuracy."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from hpcue.training.batches import UnitBatches
from hpcue.training.lr_schedule import scheduled


class Classifier(UnitBatches, L.LightningModule):
    """Cross-entropy training; test accuracy is summed over ranks as correct / total counts."""

    def __init__(self, model: nn.Module, *, lr: float, momentum: float, weight_decay: float,
                 augment: str = "none", warmup_epochs: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.augment, self.augment_seed, self.warmup_epochs = augment, seed, warmup_epochs
        self.test_accuracy: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        logits = self(self.augmented(images, batch_idx))
        loss = F.cross_entropy(logits, labels)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(images))
        return loss

    def on_test_epoch_start(self) -> None:
        self._counts = torch.zeros(2, dtype=torch.float64, device=self.device)

    def test_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        pred = self(images).argmax(1)
        self._counts[0] += (pred == labels).sum()
        self._counts[1] += len(labels)

    def on_test_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(self._counts, reduce_op="sum")
        self.test_accuracy = float(counts[0] / counts[1])
        self.log("test_acc", self.test_accuracy, sync_dist=False, rank_zero_only=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay, nesterov=False)
        return scheduled(opt, self.trainer, self.warmup_epochs, 0.0)
