"""Stage 3: a victim trained from scratch on clean and on unlearnable data, tested on clean data."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from hpcue.config import RunConfig
from hpcue.data.arrays import ImageArrays
from hpcue.data.loader import IndexedImages, make_loader
from hpcue.models.classifier import Classifier
from hpcue.models.victims import build_victim
from hpcue.rundir import RunDir, atomic_write_json
from hpcue.stages.common import load_data, timed
from hpcue.stages.generate import load_arrays
from hpcue.trainer import make_trainer

STAGES = ("cluster", "train", "generate", "evaluate")


def train_victim(cfg: RunConfig, run: RunDir, train: ImageArrays, test: ImageArrays,
                 tag: str) -> float:
    """Same seed, same model, same schedule for both training sets: only the data differs."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    v = cfg.victim
    model = Classifier(build_victim(v.arch, train.num_classes), lr=v.lr, momentum=v.momentum,
                       weight_decay=v.weight_decay, augment=cfg.data.augment)
    train_loader = make_loader(IndexedImages(train.images, train.labels), v.global_batch_size,
                               shuffle=True, seed=cfg.seed, num_workers=cfg.data.num_workers)
    test_loader = make_loader(IndexedImages(test.images, test.labels), v.global_batch_size,
                              shuffle=False, seed=cfg.seed, num_workers=cfg.data.num_workers)
    trainer = make_trainer(cfg.runtime, run, f"victim_{tag}", v.epochs)
    trainer.fit(model, train_loader)
    trainer.test(model, test_loader, verbose=False)
    return float(model.test_accuracy)


def collect_results(cfg: RunConfig, run: RunDir) -> dict:
    """results.json: the run's headline numbers, gathered from every stage's record."""
    records = {stage: run.read_record(stage) for stage in STAGES}
    return {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        "num_clusters": cfg.cluster.num_clusters,
        "epsilon": cfg.train.epsilon,
        "global_batch_size": cfg.train.global_batch_size,
        "world_size": 1,
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
    }


def run_evaluate(cfg: RunConfig, run: RunDir) -> Path:
    record: dict = {}
    with timed(record):
        splits = load_data(cfg)
        unlearnable = load_arrays(run.require(run.unlearnable / "train.npz", "generate"))
        record["clean_test_acc"] = round(
            train_victim(cfg, run, splits["train"], splits["test"], "clean"), 4)
        record["unlearnable_test_acc"] = round(
            train_victim(cfg, run, unlearnable, splits["test"], "unlearnable"), 4)
    run.write_record("evaluate", record)
    atomic_write_json(run.results, collect_results(cfg, run))
    return run.results
