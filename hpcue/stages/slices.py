"""The slice of the config each stage's outputs depend on, and its digest.

Apart from ``provenance.py`` (which records the environment, so imports torch and Lightning):
a sweep hashes the cluster slice to share clusters between its points, and ``hpcue sweep
render`` loads neither library.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hpcue.config import RunConfig, flatten

#: the config keys each stage's outputs depend on (a section name stands for all its keys)
SLICES: dict[str, tuple[str, ...]] = {
    "cluster": ("data.dataset", "data.root", "data.shards", "data.num_shards",
                "data.image_size", "data.test_fraction", "data.augment", "surrogate",
                "cluster.num_clusters", "cluster.n_init", "cluster.max_iter", "cluster.tol",
                "cluster.batch_size", "runtime.precision"),
    "train": ("seed", "data.augment", "train", "attack", "runtime.precision",
              "runtime.max_micro_batch"),
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


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The whole config as ``{dotted key: value}``, JSON-ready."""
    return flatten(cfg.model_dump(mode="json"))
