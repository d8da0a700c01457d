"""Stage 1: train the K cluster generators; write the K bounded perturbations."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from hpcue.config import RunConfig
from hpcue.dist import collectives
from hpcue.models.generator import ClusterGenerators
from hpcue.rundir import RunDir, atomic_write
from hpcue.schedule import BatchPlan
from hpcue.stages.common import (
    batch_plan,
    load_clusters,
    load_data,
    load_surrogate,
    loader,
    timed,
)
from hpcue.trainer import Throughput, make_trainer, resume_path
from hpcue.uc.module import UCModule


def build_module(cfg: RunConfig, surrogate, clusters, plan: BatchPlan) -> UCModule:
    t = cfg.train
    generators = ClusterGenerators(clusters.num_clusters, cfg.data.image_size, t.epsilon,
                                   t.generator_width, t.generator_blocks, t.bound, seed=cfg.seed)
    return UCModule(generators, surrogate, clusters.centers, clusters.assignments,
                    offset=t.target_offset, lr=plan.effective_lr, weight_decay=t.weight_decay,
                    min_lr=t.min_lr, augment=cfg.data.augment, warmup_epochs=t.warmup_epochs,
                    seed=cfg.seed)


def run_train(cfg: RunConfig, run: RunDir) -> Path:
    record: dict = {}
    with timed(record):
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        plan = batch_plan(cfg, "train")
        data = load_data(cfg, run)
        clusters = load_clusters(run)
        module = build_module(cfg, load_surrogate(cfg, run, len(data.classes)), clusters, plan)
        meter = Throughput()
        trainer = make_trainer(cfg.runtime, run, "train", cfg.train.epochs, [meter],
                               accumulate=plan.accumulate_grad_batches)
        trainer.fit(module, loader(cfg, data, "train", plan.micro_batch_size, train=True),
                    ckpt_path=resume_path(run, "train"))
        module.generators.eval()
        with torch.no_grad():
            deltas = module.generators().cpu()
        state = {"deltas": deltas, "epsilon": cfg.train.epsilon,
                 "generators": module.generators.state_dict()}
        if collectives.is_main():
            atomic_write(run.perturbations, lambda tmp: torch.save(state, tmp))
    record.update(batch_plan=plan.as_dict(), images_per_second=round(meter.images_per_second, 2),
                  train_images=meter.images,
                  final_uc_loss=float(trainer.callback_metrics.get("uc_loss_epoch", float("nan"))),
                  max_abs_delta=float(deltas.abs().max()))
    if collectives.is_main():
        run.write_record("train", record)
    collectives.barrier()
    return run.perturbations
