"""Stage 1: the attack learns its perturbations (UC: the K cluster generators)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import lightning as L
import torch

from hpcue.attacks.base import AttackInputs, AttackModule, BuildModule
from hpcue.attacks.registry import attack_class
from hpcue.distributed import collectives
from hpcue.stages.artifacts import Perturbations, read_clusters, write_perturbations
from hpcue.stages.context import StageContext
from hpcue.training.batch_plan import steps_per_epoch
from hpcue.training.callbacks import Throughput


def budget_epochs(epochs: int, steps: int | None, per_epoch: int) -> int:
    """The epochs stage 1 is given: ``train.epochs``, or under a fixed number of optimizer
    steps (``train.steps``) as many as those steps need (the Trainer's max_steps ends the last
    one early)."""
    return epochs if steps is None else math.ceil(steps / max(1, per_epoch))


def budget_record(steps: int | None, trainer: L.Trainer) -> dict:
    """Which reading of "the same training" the run used, and what it took: the epochs begun
    and the optimizer steps taken (the report's table shows them per point)."""
    return {"reading": "epochs" if steps is None else "steps",
            "epochs": trainer.current_epoch, "optimizer_steps": trainer.global_step}


def run(ctx: StageContext) -> dict:
    cfg, plan = ctx.cfg, ctx.plans["train"]
    clusters = read_clusters(ctx.run)
    meter = Throughput()
    trainers: list[L.Trainer] = []

    attack = attack_class(cfg.attack.name).configured(cfg, lr=plan.effective_lr,
                                                      augment=ctx.augment)
    if attack.owns_images:  # each rank its own images' part of every global batch
        loader = ctx.owned_loader(ctx.data, "train", plan.global_batch_size)
    else:  # micro-batches, or whole shares for a module that splits them itself
        loader = ctx.loader(ctx.data, "train", plan.per_rank_batch_size if attack.splits_batches
                            else plan.micro_batch_size, train=True)
    used = [loader]

    def fit(build: BuildModule, batches: Iterable) -> AttackModule:
        module = build(plan.accumulate_grad_batches)
        # (a module that splits its batches is not probed: it has no trial step; its split
        # follows runtime.max_micro_batch when set)
        probed = (plan if attack.splits_batches
                  else ctx.probed_plan("train", module, ctx.trial_batch))
        if probed.micro_batch_size != plan.micro_batch_size:  # auto found a smaller one
            batches = ctx.loader(ctx.data, "train", probed.micro_batch_size, train=True)
            used.append(batches)
            module = build(probed.accumulate_grad_batches)
        epochs = module.epochs or budget_epochs(
            cfg.train.epochs, cfg.train.steps,
            steps_per_epoch(len(batches), probed.accumulate_grad_batches))
        # a module that steps itself accumulates itself, and DDP must not wrap it
        trainer = ctx.trainer("train", epochs, [meter],
                              accumulate=(1 if module.steps_itself
                                          else probed.accumulate_grad_batches),
                              label=(f"stage 1 generators (K={cfg.cluster.num_clusters})"
                                     if cfg.attack.name == "uc" else f"stage 1 {attack.name}"),
                              wrap=not module.steps_itself, max_steps=cfg.train.steps)
        trainers.append(trainer)
        trainer.fit(module, batches, ckpt_path=ctx.resume_path("train"), weights_only=True)
        return module

    inputs = AttackInputs(
        groups=clusters.assignments, num_groups=clusters.num_clusters,
        image_size=cfg.data.image_size, epsilon=cfg.train.epsilon, seed=cfg.seed,
        channels=ctx.perturbation_channels, centers=clusters.centers,
        surrogate=ctx.surrogate() if cfg.attack.name == "uc" else None,
        loader=loader, fit=fit, world_size=ctx.topology.world_size, rank=collectives.rank(),
        labels=torch.from_numpy(ctx.data.labels("train")).long(),
        num_classes=len(ctx.data.classes))
    result = attack.make(inputs)
    if collectives.is_main():
        write_perturbations(ctx.run, Perturbations(result.deltas, cfg.train.epsilon,
                                                   result.state, result.groups))
    metrics = trainers[-1].callback_metrics
    return dict(attack={"name": attack.name, "uses_labels": attack.uses_labels},
                batch_plan=ctx.batch_record("train", used[-1]), augment=ctx.augment,
                **result.record, optimizer=cfg.train.optimizer,
                budget=budget_record(cfg.train.steps, trainers[-1]),
                epsilon=cfg.train.epsilon,
                perturbation_channels=ctx.perturbation_channels,
                images_per_second=round(meter.images_per_second, 2), train_images=meter.images,
                final_uc_loss=(float(metrics["uc_loss_epoch"]) if "uc_loss_epoch" in metrics
                               else None),
                max_abs_delta=(float(result.deltas.abs().max()) if result.deltas.numel()
                               else 0.0))
