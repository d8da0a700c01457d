"""The per-step learning-rate schedule every hpcue training uses: linear warmup, then cosine."""

from __future__ import annotations

import math

import torch

from hpcue.training.batch_plan import steps_per_epoch


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the optimizer's lr, then cosine down to min_lr, per step."""
    base = opt.param_groups[0]["lr"]
    floor = min(min_lr / base, 1.0) if base > 0 else 0.0
    total_steps, warmup_steps = max(1, total_steps), max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def scheduled(opt: torch.optim.Optimizer, trainer, warmup_epochs: float, min_lr: float,
              accumulate: int = 1) -> dict:
    """``configure_optimizers``' return value: ``opt`` with warmup + cosine stepped every step.

    The step count comes from the trainer (epochs x optimizer steps an epoch, or its
    ``max_steps`` where that ends training first), so the cosine ends where training does and
    warmup given in epochs means the same under any world size or accumulation.
    ``accumulate``: micro-batches a module that steps itself (manual optimization) takes per
    step, where the Trainer takes one.
    """
    batches = trainer.estimated_stepping_batches  # (also sets trainer.num_training_batches)
    per_epoch = steps_per_epoch(trainer.num_training_batches,
                                accumulate if accumulate > 1 else trainer.accumulate_grad_batches)
    if accumulate > 1:
        batches = per_epoch * trainer.max_epochs
        if trainer.max_steps != -1:  # a fixed number of steps (train.steps) ends it sooner
            batches = min(batches, trainer.max_steps)
    steps = max(1, int(batches))
    warmup = round(warmup_epochs * per_epoch)
    sched = warmup_cosine(opt, steps, warmup, min_lr)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
