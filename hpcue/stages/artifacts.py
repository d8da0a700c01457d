"""Typed readers and writers for the files stages hand each other.

    clusters.pt        {"centers": K x D float32, "assignments": N int64}     cluster -> train
    perturbations.pt   {"deltas": G x C x H x W, "epsilon", "generators"}      train -> generate
    surrogate.pt       the debug small CNN's state dict                        cluster -> train
                       (read back by models.surrogate.build_surrogate)
    unlearnable/       the unlearnable set, in the shard format (data.shards)  generate -> evaluate
    results.json       the run's headline numbers                              evaluate -> report

Every write is atomic and done by rank 0 only; every read names the stage to run first when its
file is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpcue.io import atomic_write, atomic_write_json
from hpcue.stages.rundir import RunDir


def _save(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _load(run: RunDir, path: Path, stage: str) -> Any:
    return torch.load(run.require(path, stage), map_location="cpu", weights_only=True)


@dataclass
class Clusters:
    centers: torch.Tensor      # K x D, in the surrogate's feature space
    assignments: torch.Tensor  # N: each training image's cluster, by global sample id

    @property
    def num_clusters(self) -> int:
        return len(self.centers)


def write_clusters(run: RunDir, clusters: Clusters) -> None:
    _save(run.clusters, {"centers": clusters.centers, "assignments": clusters.assignments})


def read_clusters(run: RunDir) -> Clusters:
    state = _load(run, run.clusters, "cluster")
    return Clusters(state["centers"], state["assignments"])


@dataclass
class Perturbations:
    deltas: torch.Tensor       # G x C x H x W (C: 3, or 1 on a gray data set), |delta| <= eps
    epsilon: float
    state: dict[str, Any] = field(default_factory=dict)  # what made them (generator weights)


def write_perturbations(run: RunDir, p: Perturbations) -> None:
    _save(run.perturbations, {"deltas": p.deltas, "epsilon": p.epsilon, **p.state})


def read_perturbations(run: RunDir) -> Perturbations:
    state = _load(run, run.perturbations, "train")
    deltas, epsilon = state.pop("deltas"), state.pop("epsilon")
    return Perturbations(deltas, float(epsilon), state)


def write_surrogate(run: RunDir, model: nn.Module) -> None:
    _save(run.surrogate, model.state_dict())


def write_results(run: RunDir, results: dict[str, Any]) -> None:
    atomic_write_json(run.results, results)
