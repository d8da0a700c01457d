"""The prepared data a run reads, checked against its config before a stage trusts it."""

from __future__ import annotations

from hpcue.config import RunConfig, check_consistency
from hpcue.data.options import PrepareOptions
from hpcue.data.prepare import is_prepared, prepare
from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.data.shards import ShardError, open_h5
from hpcue.distributed import collectives
from hpcue.models.surrogate import require_weights
from hpcue.stages.rundir import RunDir


def _prepare_options(cfg: RunConfig) -> PrepareOptions:
    d = cfg.data
    return PrepareOptions(image_size=d.image_size, shards=d.num_shards, seed=cfg.split_seed,
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


def preflight(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """What ``stage`` needs, checked before it clears or overwrites anything: the earlier
    stages' files, the surrogate's weights, and the config against shards that exist."""
    for label, path in run.stage_inputs(stage).items():
        if label == "surrogate" and (cfg.surrogate.arch != "small_cnn"
                                     or cfg.surrogate.weights is not None):
            continue  # only the debug small CNN is trained (and saved) by the cluster stage
        run.require(path, run.producer(path))
    if stage in ("cluster", "train"):
        require_weights(cfg.surrogate.arch, cfg.surrogate.weights)
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
