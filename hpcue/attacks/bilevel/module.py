"""The LightningModule of the bilevel attacks: a crafting model and the noise, stepped in turn.

Each epoch is one round over the data. For every batch: the model takes an SGD step on the
perturbed images (the first ``model_steps`` batches of a round, or every batch; none once a
reference model is trained), then the batch's noise takes ``pgd_steps`` signed gradient steps
down the cross-entropy toward each image's target class (its own class: error-minimizing; the
next class: AAP's targeted error-maximizing), clamped to eps and to [0, 1]. A round ends with
the model's error on the perturbed images; below ``stop_error`` the crafting stops (EM's rule).

Sample-wise noise lives on the rank that owns the image (``OwnedBatches``: a fixed partition);
class-wise noise is replicated, each batch's class means summed over ranks. The model's
gradients are summed over ranks by the module itself (``steps_itself``), and its batch norm
uses the global batch (``batch_norm.py``): without augmentation, W ranks step as one process
would (an augmentation is drawn per rank, from (seed, epoch, step, rank)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpcue.attacks.base import AttackModule
from hpcue.attacks.bilevel.batch_norm import global_batch_norm
from hpcue.distributed import collectives
from hpcue.training.batches import UnitBatches
from hpcue.training.views import seeded, strong_augmentation


@dataclass(frozen=True)
class Rounds:
    """How the model and the noise take turns (the attack's resolved settings)."""

    pgd_steps: int
    step: float                 # pixel scale, per PGD step
    model_steps: int | None     # model steps a round; None: every batch; 0: none
    stop_error: float | None    # None: run every epoch
    reference_epochs: int = 0   # epochs the model trains on clean images first (AAP)
    target_shift: int = 0       # target class = (label + shift) mod classes (AAP: 1)
    strength: float | None = None  # the strong augmentation's, or None: no augmentation
    per_sample: bool = True     # one delta per image (owned), or one per class (replicated)
    clip: float | None = None   # the model's gradient norm clipped to this (EM's 5), or not


class BilevelModule(UnitBatches, AttackModule):
    """The model is the one trained child (in checkpoints as weights; the augmentation has no
    state); the noise is not a parameter: each rank's rows are saved whole (gathered) in the
    epoch checkpoint, one format whatever the world size."""

    def __init__(self, model: nn.Module, rows: torch.Tensor, row_of: torch.Tensor,
                 labels: torch.Tensor, num_classes: int, epsilon: float, rounds: Rounds, *,
                 lr: float, total: int, seed: int = 0, accumulate: int = 1) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.rows = rows                  # this rank's deltas (owned images, or every class)
        self.row_of = row_of.long()       # global image id -> its row here (-1: not owned)
        self.labels = labels.long()
        self.num_classes, self.epsilon, self.rounds = num_classes, epsilon, rounds
        self.lr, self.total, self.accumulate = lr, total, accumulate
        self.augment_seed = seed
        self.augmentation = (None if rounds.strength is None
                             else strong_augmentation(rows.shape[-1], rounds.strength))
        self.history: list[dict] = []     # each round's error and the phase it was in
        self.traffic = {"step_bytes": 0, "steps": 0}
        self._tally = torch.zeros(2, dtype=torch.float64)

    @property
    def steps_itself(self) -> bool:
        return True

    @property
    def epochs(self) -> int | None:
        """AAP: the reference model's epochs and one pass of crafting; else train.epochs."""
        return self.rounds.reference_epochs + 1 if self.rounds.reference_epochs else None

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            global_batch_norm(self.model)  # in place: the optimizer's parameters stay
        self.rows = self.rows.to(self.device)
        self.row_of, self.labels = self.row_of.to(self.device), self.labels.to(self.device)

    def _view(self, x: torch.Tensor, batch_idx: int, salt: int) -> torch.Tensor:
        if self.augmentation is None:
            return x
        return seeded(self.augmentation, x, self.step_generator(x.device, batch_idx, salt))

    def _chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Exactly ``accumulate`` parts (some may be empty) on every rank: each part's batch
        norm is one collective, and every rank must join as many."""
        return torch.tensor_split(torch.arange(len(x), device=x.device), self.accumulate)

    def _model_step(self, x: torch.Tensor, y: torch.Tensor, batch_idx: int) -> None:
        """One SGD step on the global batch: each rank's summed loss, gradients summed over
        ranks and divided by the global count (one process's mean)."""
        self.model.train()
        opt = self.optimizers()
        for k, part in enumerate(self._chunks(x)):
            loss = F.cross_entropy(self.model(self._view(x[part], batch_idx, 1 + k)), y[part],
                                   reduction="sum")
            self.manual_backward(loss)
        params = [p for p in self.model.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                          for p in params] + [x.new_full((1,), float(len(x)))])
        if self.trainer.world_size > 1:
            flat = collectives.all_reduce_sum(flat)
            self.traffic["step_bytes"] += flat.numel() * flat.element_size()
        count, offset = float(flat[-1]), 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p) / max(count, 1.0)
            offset += p.numel()
        opt.step()  # clipped in on_before_optimizer_step, where 16-mixed has unscaled them
        opt.zero_grad(set_to_none=True)
        self.traffic["steps"] += 1

    def on_before_optimizer_step(self, optimizer) -> None:
        """EM's clipping, on gradients already summed over ranks (the same on every rank) and,
        under 16-mixed, already unscaled by the GradScaler."""
        if self.rounds.clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.rounds.clip)

    def _pgd(self, x: torch.Tensor, target: torch.Tensor, start: torch.Tensor,
             batch_idx: int) -> torch.Tensor:
        """``pgd_steps`` signed steps of each image's delta down the cross-entropy toward its
        target, within eps and keeping x + delta in [0, 1]."""
        self.model.eval()
        eps, delta = self.epsilon, start.detach().clone()
        gray = delta.shape[1] == 1 < x.shape[1]  # one change for R, G and B
        for k in range(self.rounds.pgd_steps):
            delta.requires_grad_(True)
            view = self._view((x + delta).clamp(0, 1), batch_idx, 100 + k)
            loss = F.cross_entropy(self.model(view), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = (delta - self.rounds.step * grad.sign()).clamp(-eps, eps)
                delta = (x + delta).clamp(0, 1) - x
                if gray:
                    delta = delta.mean(1, keepdim=True)
        return delta.detach()

    def training_step(self, batch, batch_idx: int) -> None:
        images, labels, index = batch
        r, epoch = self.rounds, self.current_epoch
        crafting = epoch >= r.reference_epochs
        if not crafting:  # AAP's reference model: clean images, the strong augmentation
            self._model_step(images, labels, batch_idx)
            return None
        rows = self.row_of[index] if r.per_sample else labels
        steps = r.model_steps
        if steps is None or batch_idx < steps:
            self._model_step((images + self.rows[rows]).clamp(0, 1), labels, batch_idx)
        target = (labels + r.target_shift) % self.num_classes
        delta = self._pgd(images, target, self.rows[rows], batch_idx)
        if r.per_sample:
            self.rows[rows] = delta
        else:
            self._class_means(delta, labels)
        with torch.no_grad():
            self.model.eval()
            predicted = self.model((images + self.rows[rows]).clamp(0, 1)).argmax(1)
        self._tally += torch.tensor([float((predicted == labels).sum()), float(len(labels))],
                                    dtype=torch.float64)
        return None

    def _class_means(self, delta: torch.Tensor, labels: torch.Tensor) -> None:
        """EM's universal update: each class present in the (global) batch takes the mean of
        its images' deltas, clamped to eps."""
        g = self.rows.shape[0]
        sums = torch.zeros((g, self.rows[0].numel()), dtype=torch.float64,
                           device=self.rows.device)
        sums.index_add_(0, labels, delta.flatten(1).double())
        counts = torch.bincount(labels, minlength=g).double()
        both = torch.cat([sums.flatten(), counts])
        if self.trainer.world_size > 1:
            both = collectives.all_reduce_sum(both)
            self.traffic["step_bytes"] += both.numel() * both.element_size()
        sums, counts = both[:-g].view(g, -1), both[-g:]
        present = counts > 0
        means = (sums[present] / counts[present, None]).to(self.rows.dtype)
        self.rows[present] = means.view(-1, *self.rows.shape[1:]).clamp(-self.epsilon,
                                                                       self.epsilon)

    def on_train_epoch_end(self) -> None:
        tally = collectives.all_reduce_sum(self._tally.to(self.device)).cpu().clone()
        self._tally.zero_()
        crafting = self.current_epoch >= self.rounds.reference_epochs
        error = 1.0 - float(tally[0] / tally[1].clamp_min(1.0)) if crafting else None
        self.history.append({"epoch": self.current_epoch,
                             "phase": "crafting" if crafting else "reference model",
                             "perturbed_train_error": error})
        if error is not None:
            self.log("perturbed_error", error, prog_bar=True, sync_dist=False)
            stop = self.rounds.stop_error
            if stop is not None and error < stop:  # the same reduced figure on every rank
                self.trainer.should_stop = True

    def full_rows(self) -> torch.Tensor | None:
        """Every image's (or class's) delta, in id order: on rank 0 alone for sample-wise noise
        (None elsewhere: no other rank ever holds more than its own), on every rank for
        class-wise noise (replicated anyway)."""
        if not self.rounds.per_sample:
            return self.rows
        return self.gather_owned(self.rows)

    def gather_owned(self, values: torch.Tensor) -> torch.Tensor | None:
        """``values`` (one row per image this rank owns, as ``rows``) for every image, in id
        order, on rank 0 alone (None elsewhere)."""
        owned = (self.row_of >= 0).nonzero().flatten()
        return collectives.gather_rows(values[self.row_of[owned]], owned, self.total)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        full = self.full_rows()  # a collective: every rank dumps, rank 0 saves
        if full is not None:
            checkpoint["deltas"] = full.cpu()
        checkpoint["history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        full = checkpoint["deltas"]
        if self.rounds.per_sample:
            owned = (self.row_of >= 0).nonzero().flatten().to(full.device)
            self.rows = full[owned].clone().to(self.rows.device)
        else:
            self.rows = full.clone().to(self.rows.device)
        del checkpoint["deltas"]  # this rank's rows are taken; the rest is let go
        self.history = list(checkpoint.get("history", []))

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9,
                               weight_decay=5e-4)
