"""Victims trained together: one Lightning training steps every (training set, seed) victim.

Member m learns from its own training set ("arm": clean, UC, a baseline, UC after a defense)
with its own seed (initialisation, data order, augmentation). One optimizer over all members
steps each only by its own loss (no member's loss depends on another's parameters), so a member
trains exactly as it would alone, while the data loading, schedule, checkpoints and logs are
shared. After every epoch each member's accuracy on the clean test set is recorded (the curves);
the final test gives each member's accuracy, every test image counted once across ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from hpcue.data.tensors import to_unit
from hpcue.evaluation.training_defenses import TrainingDefense
from hpcue.training.batches import augment_batch, seeded_generator
from hpcue.training.lr_schedule import scheduled
from hpcue.training.speed import fused

#: uint8 images, labels, global ids -> the uint8 images this member trains on
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def identity(images: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return images


class VictimEnsemble(L.LightningModule):
    def __init__(self, members: Sequence[nn.Module], names: Sequence[str],
                 seeds: Sequence[int], transforms: Sequence[BatchTransform], *, lr: float,
                 momentum: float, weight_decay: float, augment: str = "none",
                 warmup_epochs: float = 0.0,
                 train_defenses: Sequence[TrainingDefense | None] | None = None,
                 num_test: int = 0) -> None:
        super().__init__()
        train_defenses = [None] * len(members) if train_defenses is None else train_defenses
        if not len(members) == len(names) == len(seeds) == len(transforms) == len(
                train_defenses):
            raise ValueError("one name, seed, transform and training defense per member")
        self.members = nn.ModuleList(members)
        self.names, self.seeds, self.transforms = list(names), list(seeds), list(transforms)
        self.train_defenses = list(train_defenses)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.augment, self.warmup_epochs = augment, warmup_epochs
        self.curves: list[list[float]] = []  # per epoch: each member's clean test accuracy
        self.test_accuracy: list[float] = []
        # the final test, image by image: members x test images, 1 where a member was right
        # (the intervals of evaluation/metrics.py resample the test images with it)
        self.num_test = num_test
        self.test_correct: torch.Tensor | None = None
        # victim.ud: per training set, its first victim's SAL of each layer after each epoch
        # (evaluation/sharpness.py ``SharpnessEachEpoch`` fills it)
        self.sal: dict[str, list[list[float]]] = {}

    def _train_batch(self, m: int, batch, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Member m's images and targets this step: its arm's transform, the augmentation, then
        its training defense (if any), each drawn from (seed, epoch, step, rank)."""
        images, labels, ids = batch
        x = to_unit(self.transforms[m](images, labels, ids))
        key = [self.seeds[m], self.current_epoch, batch_idx, self.global_rank]
        if self.augment != "none":
            x = augment_batch(x, self.augment, seeded_generator(key, x.device))
        defense = self.train_defenses[m]
        if defense is None:
            return x, labels
        return defense(x, labels, self.members[m], seeded_generator(key + [1], x.device))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = [F.cross_entropy(model(x), targets)
                  for m, (model, name) in enumerate(zip(self.members, self.names, strict=True))
                  for x, targets in [self._train_batch(m, batch[name], batch_idx)]]
        loss = torch.stack(losses).sum()
        self.log("train_loss_mean", loss / len(losses), prog_bar=True, on_step=True,
                 on_epoch=True, batch_size=len(batch[self.names[0]][0]))
        return loss

    # -- clean test accuracy of every member: after each epoch (curves) and at the end -------

    def _start_counting(self) -> None:
        self._counts = torch.zeros(len(self.members), 2, dtype=torch.float64,
                                   device=self.device)

    def _count(self, batch) -> torch.Tensor:
        """Each member's right answers on the batch (members x batch), counted."""
        images, labels, _ = batch
        x = to_unit(images)
        right = torch.stack([model(x).argmax(1) == labels for model in self.members])
        self._counts[:, 0] += right.sum(1)
        self._counts[:, 1] += len(labels)
        return right

    def _accuracies(self) -> list[float]:
        counts = self.trainer.strategy.reduce(self._counts, reduce_op="sum")
        return (counts[:, 0] / counts[:, 1]).tolist()

    def on_validation_epoch_start(self) -> None:
        self._start_counting()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._count(batch)

    def on_validation_epoch_end(self) -> None:
        accs = self._accuracies()
        if not self.trainer.sanity_checking:
            self.curves.append(accs)
        for name, acc in zip(self.names, accs, strict=True):
            self.log(f"clean_test_acc/{name}", acc, rank_zero_only=True)

    def on_test_epoch_start(self) -> None:
        self._start_counting()
        self._correct = torch.zeros(len(self.members), self.num_test, device=self.device)

    def test_step(self, batch, batch_idx: int) -> None:
        right = self._count(batch)
        if self.num_test:
            self._correct[:, batch[2].to(self.device)] = right.float()

    def on_test_epoch_end(self) -> None:
        self.test_accuracy = self._accuracies()
        if self.num_test:  # every test image is on exactly one rank: the sum assembles them
            self.test_correct = self.trainer.strategy.reduce(
                self._correct, reduce_op="sum").round().bool().cpu()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hpcue_curves"] = self.curves  # a resumed run keeps the epochs before it
        checkpoint["hpcue_sal"] = self.sal

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.curves = checkpoint.get("hpcue_curves", [])
        self.sal = checkpoint.get("hpcue_sal", {})

    def speed_parts(self) -> dict[str, list[nn.Module]]:
        """What ``runtime.channels_last`` and ``runtime.compile`` act on (training/speed.py)."""
        return {"victim": list(self.members)}

    def optimizer(self) -> torch.optim.SGD:
        """Every member's SGD, before its schedule (benchmarks/gpu_throughput.py steps it
        bare)."""
        return torch.optim.SGD(self.members.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay,
                               **fused(self.members.parameters()))

    def configure_optimizers(self):
        return scheduled(self.optimizer(), self.trainer, self.warmup_epochs, 0.0)


def by_learner(spans: dict[str, tuple[int, int]], test_accuracy: Sequence[float],
               member_curves: Sequence[Sequence[float]], test_correct: torch.Tensor | None
               ) -> tuple[dict[str, list[float]], dict[str, list[list[float]]],
                          dict[str, torch.Tensor] | None]:
    """An ensemble's results, member by member, regrouped by learner (``spans``: each one's
    members, [start, end)): its victims' accuracies, each one's curve, their test outcomes."""
    per_arm = {a: list(test_accuracy[s:e]) for a, (s, e) in spans.items()}
    curves = {a: [[round(acc, 4) for acc in member_curves[i]] for i in range(s, e)]
              for a, (s, e) in spans.items()}
    rows = (None if test_correct is None
            else {a: test_correct[s:e] for a, (s, e) in spans.items()})
    return per_arm, curves, rows
