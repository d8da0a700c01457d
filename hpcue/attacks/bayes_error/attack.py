"""Unlearnable examples by Bayes-error maximisation (Zhang, Sun, Lim, Zhang) as an ``Attack``:
the images move, within eps, to where a model trained on them separates the classes worst, as
the Bayes error of its penultimate features estimates it (module.py, objective.py).

Reconstructed from the authors' public code: cat-claws/unlearnable (cifar10-retrain.py: the
outer loop, its 2,000 AdamW steps at 1e-3 and the ResNet-18 retrained 30 epochs at each) and
cat-claws/bayes-error-local-averaging (the estimate: Gaussian kernel, sigma 0.3, on features
scaled by their largest magnitude). At those settings one run retrains 60,000 epochs: the
settings are ``attack.bayes_*``, and a smaller budget keeps AdamW's total path (steps x lr)
at the paper's 2.0 unless ``attack.bayes_lr`` says otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from hpcue.attacks.base import AttackInputs, AttackResult
from hpcue.attacks.bayes_error.module import Ascent, BayesErrorModule
from hpcue.attacks.bilevel.attack import Bilevel
from hpcue.attacks.bilevel.module import BilevelModule, Rounds
from hpcue.config import RunConfig
from hpcue.models.victims import build_victim

#: the reference's steps, retraining epochs, kernel width, and AdamW's path (steps x lr)
PAPER = dict(steps=2000, retrain_epochs=30, sigma=0.3, path=2.0)


@dataclass
class BayesError(Bilevel):
    name: ClassVar[str] = "bayes_error"
    uses_labels: ClassVar[bool] = True

    ascent: Ascent = Ascent(PAPER["steps"], PAPER["retrain_epochs"], PAPER["sigma"],
                            PAPER["path"] / PAPER["steps"])

    @classmethod
    def configured(cls, cfg: RunConfig, *, lr: float | None = None,
                   augment: str = "none") -> BayesError:
        a = cfg.attack
        steps = a.bayes_steps or PAPER["steps"]
        ascent = Ascent(steps=steps, retrain_epochs=a.bayes_retrain_epochs or
                        PAPER["retrain_epochs"], sigma=a.bayes_sigma or PAPER["sigma"],
                        image_lr=a.bayes_lr or PAPER["path"] / steps)
        return cls(Rounds(pgd_steps=0, step=0.0, model_steps=None, stop_error=None),
                   a.model_arch, a.model_lr, ascent)

    def module(self, model: nn.Module, rows: torch.Tensor, row_of: torch.Tensor,
               inputs: AttackInputs, classes: int, accumulate: int) -> BilevelModule:
        assert inputs.labels is not None
        arch, seed, size = self.model_arch, inputs.seed, inputs.image_size

        def fresh(step: int) -> nn.Module:
            """Outer step ``step``'s freshly initialised model, from (seed, step) alone."""
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1_000_003 + step)
                return build_victim(arch, classes, size)

        return BayesErrorModule(model, fresh, rows, row_of, inputs.labels, classes,
                                inputs.epsilon, self.ascent, lr=self.model_lr,
                                total=len(inputs.labels), seed=seed, accumulate=accumulate)

    def settings(self) -> dict:
        return {**asdict(self.ascent), "per_sample": True,
                "paper": {"steps": PAPER["steps"], "retrain_epochs": PAPER["retrain_epochs"]},
                "reduced": (self.ascent.steps, self.ascent.retrain_epochs)
                != (PAPER["steps"], PAPER["retrain_epochs"])}

    def make(self, inputs: AttackInputs) -> AttackResult:
        result = super().make(inputs)
        errors = [r["bayes_error"] for r in result.record["rounds"]]
        result.record["bayes_error"] = {"first": errors[0] if errors else None,
                                        "last": errors[-1] if errors else None}
        return result


__all__ = ["BayesError"]
