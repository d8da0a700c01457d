"""The LightningModule of Bayes-error maximisation: at each of ``steps`` outer steps a fresh
model trains ``retrain_epochs`` epochs on the current images, one epoch takes every image's
penultimate features and the estimate's gradient in them (objective.py), and one epoch carries
that gradient back to the images, which then take one AdamW step up the estimate, projected to
eps (cat-claws/unlearnable, cifar10-retrain.py: 2,000 steps, 30 epochs of SGD 0.1 with momentum
0.9, weight decay 5e-4 and a cosine schedule, AdamW at its defaults on the images).

The images are the clean ones plus one delta each, owned by one rank (``OwnedBatches``), AdamW's
state with it; the model trains data-parallel as the bilevel attacks' does (BilevelModule: its
gradients summed over ranks, batch norm over the global batch). Everything a step needs is in
the epoch checkpoint (deltas, AdamW's moments, the feature gradient), gathered to one format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hpcue.attacks.bayes_error.objective import bayes_error_and_gradient
from hpcue.attacks.bilevel.module import BilevelModule, Rounds
from hpcue.distributed import collectives
from hpcue.models.victims import penultimate


@dataclass(frozen=True)
class Ascent:
    """The attack's resolved settings (the paper's code: 2000, 30, 0.3, 1e-3, 0.01)."""

    steps: int                # outer steps: AdamW steps on the images
    retrain_epochs: int       # epochs a fresh model trains on the current images each step
    sigma: float              # the Gaussian kernel's width on the scaled features
    image_lr: float           # AdamW's, on the images
    image_weight_decay: float = 0.01  # AdamW's default, on the images (x', not the delta)


class BayesErrorModule(BilevelModule):
    def __init__(self, model: nn.Module, fresh: Callable[[int], nn.Module], rows: torch.Tensor,
                 row_of: torch.Tensor, labels: torch.Tensor, num_classes: int, epsilon: float,
                 ascent: Ascent, *, lr: float, total: int, seed: int = 0,
                 accumulate: int = 1) -> None:
        super().__init__(model, rows, row_of, labels, num_classes, epsilon,
                         Rounds(pgd_steps=0, step=0.0, model_steps=None, stop_error=None),
                         lr=lr, total=total, seed=seed, accumulate=accumulate)
        self.fresh, self.ascent = fresh, ascent
        self.feature_grad: torch.Tensor | None = None  # N x D, every rank, between two epochs
        self.adam: dict = {}      # AdamW's state for this rank's rows
        self._features = torch.zeros(0)
        self._noise_grad = torch.zeros(0)
        self.traffic["feature_bytes"] = 0

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for key in ("exp_avg", "exp_avg_sq"):
            if key in self.adam:
                self.adam[key] = self.adam[key].to(self.device)
        if self.feature_grad is not None:
            self.feature_grad = self.feature_grad.to(self.device)

    @property
    def epochs(self) -> int:
        return self.ascent.steps * (self.ascent.retrain_epochs + 2)

    def phase(self, epoch: int) -> tuple[int, str]:
        """(outer step, what this epoch does: retrain, features or ascent)."""
        step, k = divmod(epoch, self.ascent.retrain_epochs + 2)
        r = self.ascent.retrain_epochs
        return step, "retrain" if k < r else ("features" if k == r else "ascent")

    def on_train_epoch_start(self) -> None:
        step, phase = self.phase(self.current_epoch)
        k = self.current_epoch % (self.ascent.retrain_epochs + 2)
        opt = self.optimizers()
        if phase == "retrain":
            if k == 0:  # a fresh model, from (seed, step): the same on every rank and resume
                self.model.load_state_dict(self.fresh(step).state_dict())
                opt.optimizer.state.clear()
            lr = 0.5 * self.lr * (1 + math.cos(math.pi * k / self.ascent.retrain_epochs))
            for group in opt.param_groups:
                group["lr"] = lr
        elif phase == "features":
            width = self.model.fc.in_features
            self._features = torch.zeros((self.total, width), device=self.device)
        else:
            self._noise_grad = torch.zeros_like(self.rows)

    def _project(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Each row within eps and x + delta within [0, 1] (the reference clamps its images
        the same way before each step); returns x + delta."""
        d = self.rows[rows].clamp(-self.epsilon, self.epsilon)
        d = (images + d).clamp(0, 1) - images
        if d.shape[1] != self.rows.shape[1]:  # one change for R, G and B
            d = d.mean(1, keepdim=True)
        self.rows[rows] = d
        return images + d

    def training_step(self, batch, batch_idx: int) -> None:
        images, labels, index = batch
        rows = self.row_of[index]
        with torch.no_grad():
            x = self._project(images, rows)
        _, phase = self.phase(self.current_epoch)
        if phase == "retrain":
            self._model_step(x, labels, batch_idx)
            return None
        self.model.eval()
        if phase == "features":
            with torch.no_grad():
                self._features[index] = penultimate(self.model, x).float()
            return None
        assert self.feature_grad is not None
        delta = self.rows[rows].clone().requires_grad_(True)
        features = penultimate(self.model, images + delta)
        (grad,) = torch.autograd.grad(features, delta,
                                      self.feature_grad[index].to(features.dtype))
        with torch.no_grad():
            self._noise_grad[rows] += grad.float()
            # AdamW's decoupled decay of the image x' = x + delta (applied at its old value,
            # as AdamW does before its update)
            a = self.ascent
            decay = a.image_lr * a.image_weight_decay * (images + self.rows[rows])
            if decay.shape[1] != self.rows.shape[1]:
                decay = decay.mean(1, keepdim=True)
            self.rows[rows] -= decay
        return None

    def on_train_epoch_end(self) -> None:
        step, phase = self.phase(self.current_epoch)
        if phase == "features":
            features = self._features
            if self.trainer.world_size > 1:  # each image's row from the rank that owns it
                features = collectives.all_reduce_sum(features)
                self.traffic["feature_bytes"] += features.numel() * features.element_size()
            self._features = torch.zeros(0)
            error, self.feature_grad = bayes_error_and_gradient(
                features, self.labels, self.ascent.sigma, self.num_classes)
            self.history.append({"step": step, "epoch": self.current_epoch,
                                 "bayes_error": error})
            self.log("bayes_error", error, prog_bar=True, sync_dist=False)
        elif phase == "ascent":
            self._step_images()
            self.feature_grad = None

    def _step_images(self) -> None:
        """One AdamW step (maximising) on this rank's rows, then each within eps."""
        rows = self.rows
        rows.grad = self._noise_grad
        opt = torch.optim.AdamW([rows], lr=self.ascent.image_lr, weight_decay=0.0,
                                maximize=True, foreach=False)
        if self.adam:
            opt.state[rows] = self.adam
        opt.step()
        self.adam = opt.state[rows]
        rows.grad = None
        self._noise_grad = torch.zeros(0)
        with torch.no_grad():
            rows.clamp_(-self.epsilon, self.epsilon)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        moments = {key: self.gather_owned(self.adam[key]) for key in ("exp_avg", "exp_avg_sq")
                   } if self.adam else {}
        if collectives.is_main():
            checkpoint["adam"] = ({"step": float(self.adam["step"]),
                                   **{k: v.cpu() for k, v in moments.items()}}
                                  if self.adam else {})
            checkpoint["feature_grad"] = (None if self.feature_grad is None
                                          else self.feature_grad.cpu())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        owned = (self.row_of >= 0).nonzero().flatten()
        saved = checkpoint.pop("adam", {})
        self.adam = ({"step": torch.tensor(saved["step"]),
                      **{k: saved[k][owned].clone().to(self.rows.device)
                         for k in ("exp_avg", "exp_avg_sq")}} if saved else {})
        grad = checkpoint.pop("feature_grad", None)
        self.feature_grad = None if grad is None else grad.to(self.rows.device)
