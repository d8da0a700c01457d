"""Stage 1: the attack learns its perturbations (UC: the K cluster generators)."""

from __future__ import annotations

import lightning as L

from hpcue.attacks.base import AttackInputs
from hpcue.attacks.uc.attack import UnlearnableClusters
from hpcue.config import RunConfig
from hpcue.distributed import collectives
from hpcue.stages.artifacts import Perturbations, read_clusters, write_perturbations
from hpcue.stages.context import StageContext
from hpcue.training.trainer import Throughput


def sharded(mode: str, world_size: int) -> bool:
    """``train.generator_parallel``: auto shards the generators whenever there are ranks to
    share them."""
    return mode == "shard" or (mode == "auto" and world_size > 1)


def communicated(traffic: dict) -> dict:
    """Stage 1's collective payload from rank 0's view: per optimizer step (mean over the steps
    this process ran) and once an epoch."""
    steps = max(1, traffic["steps"])
    return {"bytes_per_step": round(traffic["step_bytes"] / steps),
            "sync_bytes_per_epoch": traffic["epoch_sync_bytes"]}


def uc_attack(cfg: RunConfig, lr: float, augment: str, world_size: int) -> UnlearnableClusters:
    t = cfg.train
    return UnlearnableClusters(width=t.generator_width, blocks=t.generator_blocks, bound=t.bound,
                               target_offset=t.target_offset, lr=lr, weight_decay=t.weight_decay,
                               min_lr=t.min_lr, augment=augment,
                               warmup_epochs=t.warmup_epochs,
                               shard=sharded(t.generator_parallel, world_size),
                               generator_images=t.generator_images)


def run(ctx: StageContext) -> dict:
    cfg, plan = ctx.cfg, ctx.plans["train"]
    clusters = read_clusters(ctx.run)
    meter = Throughput()
    trainers: list[L.Trainer] = []

    loader = ctx.loader(ctx.data, "train", plan.micro_batch_size, train=True)
    used = [loader]

    def fit(module: L.LightningModule, batches) -> None:
        probed = ctx.probed_plan("train", module, ctx.trial_batch)
        if probed.micro_batch_size != plan.micro_batch_size:  # auto found a smaller one
            batches = ctx.loader(ctx.data, "train", probed.micro_batch_size, train=True)
            used.append(batches)
        # a sharded module accumulates itself, against one gather of deltas per step
        shard = getattr(module, "shard", False)
        module.accumulate = probed.accumulate_grad_batches
        trainer = ctx.trainer("train", cfg.train.epochs, [meter],
                              accumulate=1 if shard else probed.accumulate_grad_batches,
                              label=f"stage 1 generators (K={cfg.cluster.num_clusters})",
                              wrap=not shard)
        trainers.append(trainer)
        trainer.fit(module, batches, ckpt_path=ctx.resume_path("train"),
                    weights_only=True)

    inputs = AttackInputs(
        groups=clusters.assignments, num_groups=clusters.num_clusters,
        image_size=cfg.data.image_size, epsilon=cfg.train.epsilon, seed=cfg.seed,
        channels=ctx.perturbation_channels, centers=clusters.centers, surrogate=ctx.surrogate(),
        loader=loader, fit=fit)
    attack = uc_attack(cfg, plan.effective_lr, ctx.augment, ctx.topology.world_size)
    result = attack.make(inputs)
    if collectives.is_main():
        write_perturbations(ctx.run, Perturbations(result.deltas, cfg.train.epsilon,
                                                   result.state))
    metrics = trainers[-1].callback_metrics
    return dict(batch_plan=ctx.batch_record("train", used[-1]), augment=ctx.augment,
                generator_parallel="shard" if attack.shard else "replicate",
                generator_images=attack.generator_images,
                **communicated(result.record["traffic"]),
                epsilon=cfg.train.epsilon,
                perturbation_channels=ctx.perturbation_channels,
                images_per_second=round(meter.images_per_second, 2), train_images=meter.images,
                final_uc_loss=(float(metrics["uc_loss_epoch"]) if "uc_loss_epoch" in metrics
                               else None),
                max_abs_delta=float(result.deltas.abs().max()))
