"""Stage 3: a victim trained from scratch on clean and on unlearnable data, tested on clean data."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from hpcue.config import RunConfig
from hpcue.data.shards import ShardSet, open_shards
from hpcue.dist import collectives
from hpcue.dist.topology import current
from hpcue.models.classifier import Classifier
from hpcue.models.victims import build_victim
from hpcue.rundir import STAGES, RunDir, atomic_write_json
from hpcue.stages.common import batch_plan, load_data, loader, timed
from hpcue.trainer import make_trainer, resume_path


def train_victim(cfg: RunConfig, run: RunDir, train: ShardSet, test: ShardSet,
                 tag: str) -> float:
    """Same seed, same model, same schedule for both training sets: only the data differs."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    v, plan = cfg.victim, batch_plan(cfg, "victim")
    model = Classifier(build_victim(v.arch, len(train.classes)), lr=plan.effective_lr,
                       momentum=v.momentum, weight_decay=v.weight_decay, augment=cfg.data.augment,
                       warmup_epochs=v.warmup_epochs, seed=cfg.seed)
    trainer = make_trainer(cfg.runtime, run, f"victim_{tag}", v.epochs,
                           accumulate=plan.accumulate_grad_batches)
    trainer.fit(model, loader(cfg, train, "train", plan.micro_batch_size, train=True),
                ckpt_path=resume_path(run, f"victim_{tag}"))
    trainer.test(model, loader(cfg, test, "test", plan.per_rank_batch_size, train=False),
                 verbose=False)
    return float(model.test_accuracy)


def collect_results(cfg: RunConfig, run: RunDir, evaluate: dict) -> dict:
    """results.json: the run's headline numbers, from the earlier stages' records and this one."""
    records = {stage: run.read_record(stage) for stage in STAGES if stage != "evaluate"}
    records["evaluate"] = evaluate
    return {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        "num_clusters": cfg.cluster.num_clusters,
        "epsilon": cfg.train.epsilon,
        "global_batch_size": cfg.train.global_batch_size,
        "world_size": current().world_size,
        "launcher": current().launcher,
        "num_nodes": current().num_nodes,
        "surrogate": cfg.surrogate.arch,
        "victim": cfg.victim.arch,
        "cluster_purity": records["cluster"]["cluster_purity"],
        "cluster_nmi": records["cluster"]["cluster_nmi"],
        "clean_test_acc": records["evaluate"]["clean_test_acc"],
        "unlearnable_test_acc": records["evaluate"]["unlearnable_test_acc"],
        "accuracy_drop": round(records["evaluate"]["clean_test_acc"]
                               - records["evaluate"]["unlearnable_test_acc"], 4),
        "stage1_images_per_second": records["train"]["images_per_second"],
        "max_abs_pixel_change": records["generate"]["max_abs_pixel_change"],
        "seconds": {stage: records[stage]["seconds"] for stage in STAGES},
        "stage1_batch": records["train"]["batch_plan"],
        "victim_batch": records["evaluate"]["batch_plan"],
    }


def run_evaluate(cfg: RunConfig, run: RunDir) -> Path:
    record: dict = {}
    with timed(record):
        data = load_data(cfg, run)
        unlearnable = open_shards(run.require(run.unlearnable, "generate"))
        record["clean_test_acc"] = round(train_victim(cfg, run, data, data, "clean"), 4)
        record["unlearnable_test_acc"] = round(
            train_victim(cfg, run, unlearnable, data, "unlearnable"), 4)
    record["batch_plan"] = batch_plan(cfg, "victim").as_dict()
    if collectives.is_main():
        # results.json first: a run killed between the two reruns evaluate, never skips it
        atomic_write_json(run.results, collect_results(cfg, run, record))
        run.write_record("evaluate", record)
    collectives.barrier()
    return run.results
