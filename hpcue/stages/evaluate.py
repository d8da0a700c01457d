"""Stage 3: a victim trained from scratch on clean and on unlearnable data, tested on clean data."""

from __future__ import annotations

import lightning as L

from hpcue.data.shards import ShardSet, open_shards
from hpcue.evaluation.victims import train_and_test, victim_module
from hpcue.stages.context import StageContext


def train_victim(ctx: StageContext, train: ShardSet, tag: str) -> float:
    """Same seed, same model, same schedule for both training sets: only the data differs."""
    cfg, plan = ctx.cfg, ctx.plans["victim"]
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = victim_module(cfg.victim, plan, len(train.classes), cfg.data.augment, cfg.seed)
    name = f"victim_{tag}"
    trainer = ctx.trainer(name, cfg.victim.epochs, accumulate=plan.accumulate_grad_batches)
    return train_and_test(
        model, trainer, ctx.loader(train, "train", plan.micro_batch_size, train=True),
        ctx.loader(ctx.data, "test", plan.per_rank_batch_size, train=False),
        resume=ctx.resume_path(name))


def run(ctx: StageContext) -> dict:
    unlearnable = open_shards(ctx.run.require(ctx.run.unlearnable, "generate"))
    return {
        "clean_test_acc": round(train_victim(ctx, ctx.data, "clean"), 4),
        "unlearnable_test_acc": round(train_victim(ctx, unlearnable, "unlearnable"), 4),
        "batch_plan": ctx.plans["victim"].as_dict(),
    }
