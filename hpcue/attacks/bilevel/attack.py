"""Error-minimizing noise (Huang et al., ICLR 2021), sample-wise and class-wise, and AUE / AAP
(Wang, Zhu, Gao, NeurIPS 2024) as ``Attack``s: one module (module.py), their settings as the
public code has them unless ``attack.*`` sets them (each resolved value goes in the record).

References read: HanxunH/Unlearnable-Examples (perturbation.py, toolbox.py: eps 8/255, step
0.8/255, 20 PGD steps sample-wise and 1 class-wise, 10 model steps a round, stop at 1% error,
SGD 0.1 with clipping at 5) and EhanW/AUE-AAP (aue.py: 5 PGD steps of eps/10 through the kornia
augmentation at strength 0.6, the model trained every batch, no stop rule; aap.py: a reference
model trained on clean augmented images (40 epochs), then 250 steps of 2.5 eps/250 toward class
y + 1 through the augmentation at strength 0.4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from hpcue.attacks.base import Attack, AttackInputs, AttackResult
from hpcue.attacks.bilevel.module import BilevelModule, Rounds
from hpcue.config import RunConfig
from hpcue.data.loader import owned_ids
from hpcue.models.victims import build_victim


@dataclass
class Bilevel(Attack):
    """What the four share; each subclass gives its reference settings (``DEFAULTS``)."""

    name: ClassVar[str] = "bilevel"
    uses_labels: ClassVar[bool] = True
    DEFAULTS: ClassVar[dict] = {}

    rounds: Rounds
    model_arch: str = "small_cnn"
    model_lr: float = 0.1

    @classmethod
    def configured(cls, cfg: RunConfig, *, lr: float | None = None,
                   augment: str = "none") -> Bilevel:
        a, d = cfg.attack, cls.DEFAULTS

        def pick(key: str):
            value = getattr(a, key)
            return d[key] if value is None else value

        step_fraction = pick("step_fraction")
        rounds = Rounds(pgd_steps=pick("pgd_steps"), step=step_fraction * cfg.train.epsilon,
                        model_steps=pick("model_steps"), stop_error=pick("stop_error"),
                        reference_epochs=a.reference_epochs if d.get("reference") else 0,
                        target_shift=d.get("target_shift", 0), strength=pick("strength"),
                        per_sample=d["per_sample"], clip=d.get("clip"))
        return cls(rounds, a.model_arch, a.model_lr)

    @property
    def splits_batches(self) -> bool:
        return True

    @property
    def owns_images(self) -> bool:
        """One delta per image, each on the rank that owns the image (``OwnedBatches``)."""
        return self.rounds.per_sample

    def module(self, model: nn.Module, rows: torch.Tensor, row_of: torch.Tensor,
               inputs: AttackInputs, classes: int, accumulate: int) -> BilevelModule:
        """The module that crafts ``rows`` (this rank's deltas) with ``model``."""
        assert inputs.labels is not None
        return BilevelModule(model, rows, row_of, inputs.labels, classes, inputs.epsilon,
                             self.rounds, lr=self.model_lr, total=len(inputs.labels),
                             seed=inputs.seed, accumulate=accumulate)

    def settings(self) -> dict:
        """The resolved settings, for the record."""
        return asdict(self.rounds)

    def make(self, inputs: AttackInputs) -> AttackResult:
        if inputs.labels is None or inputs.fit is None or inputs.loader is None:
            raise TypeError(f"{self.name} needs the training labels, batches and a fit function")
        n = len(inputs.labels)
        classes = int(inputs.num_classes or int(inputs.labels.max()) + 1)
        shape = (inputs.channels, inputs.image_size, inputs.image_size)
        if self.rounds.per_sample:
            mine = owned_ids(n, inputs.rank, inputs.world_size)
            row_of = torch.full((n,), -1, dtype=torch.long)
            row_of[mine] = torch.arange(len(mine))
            rows, groups = torch.zeros((len(mine), *shape)), torch.arange(n)
        else:
            row_of, rows = inputs.labels.long(), torch.zeros((classes, *shape))
            groups = inputs.labels.long()

        def build(accumulate: int) -> BilevelModule:
            torch.manual_seed(inputs.seed)  # every build starts from the same model
            return self.module(build_victim(self.model_arch, classes, inputs.image_size),
                               rows.clone(), row_of,
                               inputs, classes, accumulate)

        module = inputs.fit(build, inputs.loader)
        assert isinstance(module, BilevelModule)
        full = module.full_rows()  # sample-wise: on rank 0 alone, the one that writes them
        # (elsewhere this rank's own rows stand in: its record is not written)
        deltas = (full if full is not None else module.rows).detach().float().cpu()
        steps = max(1, module.traffic["steps"])
        record = {"settings": {**self.settings(), "model_arch": self.model_arch,
                               "model_lr": self.model_lr, "epsilon": inputs.epsilon},
                  "rounds": module.history,
                  "delta_parallel": "owned" if self.rounds.per_sample else "replicate",
                  "delta_bytes_per_rank": int(module.rows.numel() * module.rows.element_size()),
                  "bytes_per_step": round(module.traffic["step_bytes"] / steps),
                  **{k: v for k, v in module.traffic.items()
                     if k not in ("steps", "step_bytes")},
                  "gather_bytes": int(n * math.prod(shape) * 4)
                  if inputs.world_size > 1 and self.rounds.per_sample else 0}
        return AttackResult(deltas, {"model": module.model.state_dict()}, record, groups)


@dataclass
class ErrorMinimizingSamplewise(Bilevel):
    name: ClassVar[str] = "em_samplewise"
    DEFAULTS: ClassVar[dict] = dict(pgd_steps=20, step_fraction=0.1, model_steps=10,
                                    stop_error=0.01, strength=None, per_sample=True, clip=5.0)


@dataclass
class ErrorMinimizingClasswise(Bilevel):
    name: ClassVar[str] = "em_classwise"
    DEFAULTS: ClassVar[dict] = dict(pgd_steps=1, step_fraction=0.1, model_steps=10,
                                    stop_error=0.01, strength=None, per_sample=False, clip=5.0)


@dataclass
class AUE(Bilevel):
    """Error-minimizing through the strong augmentation, the model trained on every batch."""

    name: ClassVar[str] = "aue"
    DEFAULTS: ClassVar[dict] = dict(pgd_steps=5, step_fraction=0.1, model_steps=None,
                                    stop_error=None, strength=0.6, per_sample=True)


@dataclass
class AAP(Bilevel):
    """Targeted error-maximizing (toward class y + 1) on a reference model trained first."""

    name: ClassVar[str] = "aap"
    DEFAULTS: ClassVar[dict] = dict(pgd_steps=250, step_fraction=0.01, model_steps=0,
                                    stop_error=None, strength=0.4, per_sample=True,
                                    reference=True, target_shift=1)


__all__ = ["AAP", "AUE", "ErrorMinimizingClasswise", "ErrorMinimizingSamplewise"]
