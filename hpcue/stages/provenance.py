"""What each stage was built from: the slice of the config it reads, and the files it read.

Every stage record keeps both, so a run directory can say what its results describe. A stage
command that would build on an earlier stage made under other settings (``hpcue generate --set
train.epsilon=...`` on perturbations made at another eps) is refused, naming the stage to rerun;
results.json then never reports settings other than the ones its artifacts were made with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpcue.config import ConfigError, RunConfig
from hpcue.data.shards import META, sha256
from hpcue.stages.rundir import STAGES, RunDir

#: the config keys each stage's outputs depend on (a section name stands for all its keys)
SLICES: dict[str, tuple[str, ...]] = {
    "cluster": ("data.dataset", "data.root", "data.shards", "data.num_shards",
                "data.image_size", "data.test_fraction", "data.augment", "surrogate",
                "cluster.num_clusters", "cluster.n_init", "cluster.max_iter", "cluster.tol",
                "cluster.batch_size", "runtime.precision"),
    "train": ("seed", "data.augment", "train", "runtime.precision", "runtime.max_micro_batch"),
    "generate": (),
    "evaluate": ("seed", "data.augment", "victim", "runtime.precision",
                 "runtime.max_micro_batch"),
}


def config_slice(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """``{dotted key: value}`` of what ``stage`` reads from the config, JSON-ready."""
    dumped = cfg.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in SLICES[stage]:
        node: Any = dumped
        for part in key.split("."):
            node = node[part]
        if isinstance(node, dict):
            out.update({f"{key}.{k}": v for k, v in node.items()})
        else:
            out[key] = node
    if stage == "cluster":  # the seeds the clusters were drawn with, whichever key set them
        out |= {"data.split_seed": cfg.split_seed, "cluster.seed": cfg.cluster_seed}
    return out


def slice_digest(cfg: RunConfig, stage: str) -> str:
    """A short hash of ``stage``'s slice: equal digests, same outputs (up to float order)."""
    blob = json.dumps(config_slice(cfg, stage), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digests(paths: dict[str, Path]) -> dict[str, str]:
    """sha256 of each file a stage read, by label (a shard directory: of its meta.json, which
    holds every shard's sha256); files that do not exist are left out."""
    out = {}
    for label, path in paths.items():
        target = path / META if path.is_dir() else path
        if target.is_file():
            out[label] = sha256(target)
    return out


def changed_keys(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))


def check_earlier_stages(cfg: RunConfig, run: RunDir, stage: str) -> None:
    """Refuse to run ``stage`` on top of an earlier stage made under other settings, naming the
    keys that differ and the stage to rerun (the earliest such stage)."""
    for earlier in STAGES[:STAGES.index(stage)]:
        path = run.stage_record(earlier)
        if not path.is_file():
            continue
        recorded = run.read_record(earlier).get("config")
        if recorded is None:  # written before records kept their slice: nothing to compare
            continue
        keys = changed_keys(recorded, config_slice(cfg, earlier))
        if keys:
            shown = ", ".join(f"{k} ({recorded.get(k)!r} -> {config_slice(cfg, earlier).get(k)!r})"
                              for k in keys[:4])
            raise ConfigError(f"{run.root}: stage {earlier} was made with other settings than "
                              f"`hpcue {stage}` would build on: {shown}; rerun `hpcue {earlier} "
                              f"--out {run.root}` with them first (it clears the later stages)")
