"""The victim recipe: a model trained from scratch on a training set, tested on clean data.

Clean and unlearnable training sets get the same seed, model, optimizer and schedule; only the
data differs, so the gap between the two accuracies is the protection.
"""

from __future__ import annotations

import lightning as L

from hpcue.config import VictimConfig
from hpcue.models.victims import build_victim
from hpcue.training.batch_plan import BatchPlan
from hpcue.training.classifier import Classifier


def victim_module(v: VictimConfig, plan: BatchPlan, num_classes: int, augment: str,
                  seed: int) -> Classifier:
    """A fresh victim: SGD with momentum at the plan's effective lr, warmup then cosine."""
    return Classifier(build_victim(v.arch, num_classes), lr=plan.effective_lr,
                      momentum=v.momentum, weight_decay=v.weight_decay, augment=augment,
                      warmup_epochs=v.warmup_epochs, seed=seed)


def train_and_test(model: Classifier, trainer: L.Trainer, train_batches, test_batches,
                   resume: str | None = None) -> float:
    """Fit on ``train_batches`` (resuming from ``resume``), then the exact accuracy over every
    rank's ``test_batches`` (each test sample counted once)."""
    trainer.fit(model, train_batches, ckpt_path=resume)
    trainer.test(model, test_batches, verbose=False)
    return float(model.test_accuracy)
