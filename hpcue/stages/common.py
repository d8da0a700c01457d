"""What several stages share: the prepared data, and the previous stage's files."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hpcue.config import RunConfig, check_consistency
from hpcue.data.loader import ShardDataset, make_loader
from hpcue.data.prepare import PrepareOptions, is_prepared, prepare
from hpcue.data.shards import ShardError, ShardSet, open_h5, open_shards
from hpcue.dist import collectives
from hpcue.models.surrogate import Surrogate, build_surrogate
from hpcue.rundir import RunDir
from hpcue.schedule import BatchPlan, plan_batches


@dataclass
class Clusters:
    centers: torch.Tensor
    assignments: torch.Tensor

    @property
    def num_clusters(self) -> int:
        return len(self.centers)


def _prepare_options(cfg: RunConfig) -> PrepareOptions:
    d = cfg.data
    return PrepareOptions(image_size=d.image_size, shards=d.num_shards, seed=cfg.seed,
                          test_fraction=d.test_fraction)


def check_data(cfg: RunConfig, shards: ShardSet) -> None:
    """The config against the shards it will read: data set, image size, K, split sizes."""
    d = cfg.data
    if shards.meta["dataset"] != d.dataset:
        raise ShardError(f"{shards.root} holds {shards.meta['dataset']!r} but the config says "
                         f"data.dataset={d.dataset!r}")
    if shards.image_shape[0] != d.image_size:
        raise ShardError(f"{shards.root} was prepared at {shards.image_shape[0]} px but the "
                         f"config says data.image_size={d.image_size}")
    check_consistency(cfg, shards.size("train"), shards.size("test"), collectives.world_size())


def preflight(cfg: RunConfig, run: RunDir) -> None:
    """check_data on shards that already exist, before a stage clears or overwrites anything."""
    d = cfg.data
    if d.shards is not None:
        check_data(cfg, open_shards(d.shards))
    elif is_prepared(d.dataset, d.root, run.data, _prepare_options(cfg)):
        check_data(cfg, open_shards(run.data))


def load_data(cfg: RunConfig, run: RunDir) -> ShardSet:
    """The prepared shards: ``data.shards`` if set, else prepared once into ``<run>/data``."""
    d = cfg.data
    if d.shards is None:  # rank 0 prepares into the run directory, the others wait and read it
        opts = _prepare_options(cfg)
        collectives.on_main(lambda: prepare(d.dataset, d.root, run.data, opts, replace_other=True),
                            f"preparing {d.dataset} into {run.data}")
    shards = open_shards(d.shards if d.shards is not None else run.data)
    check_data(cfg, shards)
    check_readable(shards)
    return shards


def check_readable(shards: ShardSet) -> None:
    """Each rank opens its share of the shard files: a truncated or damaged file ends every
    rank at once with its name, not the others in a later all-reduce at the timeout."""
    error = None
    try:
        for split in shards.splits:
            for path in shards.paths(split)[collectives.rank()::collectives.world_size()]:
                open_h5(path).close()
    except ShardError as exc:
        error = exc
    collectives.raise_if_any(error, f"opening the shards in {shards.root}")


def loader(cfg: RunConfig, shards: ShardSet, split: str, batch_size: int, *, train: bool):
    """This rank's part: training order (shuffled, padded) or evaluation (each sample once)."""
    return make_loader(ShardDataset(shards, split, cache=cfg.data.cache), batch_size,
                       shuffle=train, seed=cfg.seed, num_workers=cfg.data.num_workers,
                       rank=collectives.rank(), world_size=collectives.world_size())


def batch_plan(cfg: RunConfig, section: str) -> BatchPlan:
    """Per-rank batch, accumulation and effective lr of ``train`` or ``victim``."""
    s = getattr(cfg, section)
    return plan_batches(section, s.global_batch_size, collectives.world_size(),
                        cfg.runtime.max_micro_batch, s.lr, s.lr_scaling, s.base_batch_size,
                        s.warmup_epochs)


def load_clusters(run: RunDir) -> Clusters:
    state = torch.load(run.require(run.clusters, "cluster"), map_location="cpu", weights_only=True)
    return Clusters(state["centers"], state["assignments"])


def load_deltas(run: RunDir) -> torch.Tensor:
    state = torch.load(run.require(run.perturbations, "train"), map_location="cpu",
                       weights_only=True)
    return state["deltas"]


def load_surrogate(cfg: RunConfig, run: RunDir, num_classes: int) -> Surrogate:
    """The configured surrogate; the debug small_cnn uses the one the cluster stage trained."""
    weights = cfg.surrogate.weights
    if cfg.surrogate.arch == "small_cnn" and weights is None:
        weights = run.require(run.surrogate, "cluster")
    return build_surrogate(cfg.surrogate.arch, weights, num_classes)


@contextmanager
def timed(record: dict, key: str = "seconds"):
    t0 = time.perf_counter()
    yield
    record[key] = round(time.perf_counter() - t0, 3)
