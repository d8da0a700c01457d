"""What several stages share: loading the data and the previous stage's files."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hpcue.config import RunConfig, check_consistency
from hpcue.data.arrays import ImageArrays
from hpcue.data.registry import load_splits
from hpcue.models.surrogate import Surrogate, build_surrogate
from hpcue.rundir import RunDir


@dataclass
class Clusters:
    centers: torch.Tensor
    assignments: torch.Tensor

    @property
    def num_clusters(self) -> int:
        return len(self.centers)


def load_data(cfg: RunConfig) -> dict[str, ImageArrays]:
    splits = load_splits(cfg.data, cfg.seed)
    check_consistency(cfg, len(splits["train"]))
    return splits


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
