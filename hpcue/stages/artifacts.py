"""Typed readers and writers for the files stages hand each other.

    clusters.pt        {"centers": K x D float32, "assignments": N int64}     cluster -> train
    perturbations.pt   {"deltas": G x C x H x W, "epsilon", "generators"}      train -> generate
    surrogate.pt       the debug small CNN's state dict                        cluster -> train
                       (read back by models.surrogate.build_surrogate)
    unlearnable/       the unlearnable set, in the shard format (data.shards)  generate -> evaluate
    results.json       the run's headline numbers                              evaluate -> report

Every write is atomic and done by rank 0 only; every read names the stage to run first when its
file is missing, and checks what it read: a damaged or foreign file is one InputError naming it
and the stage that writes it, never a traceback or a silently wrong run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpcue.errors import InputError, NonFiniteError
from hpcue.io import atomic_write, atomic_write_json
from hpcue.stages.rundir import RunDir


def _save(path: Path, obj: Any) -> None:
    """Serialised in memory, then written as plain bytes: a full disk is an OSError that
    atomic_write names, not a failure inside torch's zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def _load(run: RunDir, path: Path, stage: str) -> dict[str, Any]:
    """A dict of tensors and numbers that ``stage`` wrote; only weights, never code, is loaded."""
    run.require(path, stage)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, random bytes, pickled code: torch raises many kinds
        first = str(exc).split(". ")[0].splitlines()[0] if str(exc) else ""
        raise _damaged(run, path, stage, f"not readable ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise _damaged(run, path, stage, f"holds a {type(state).__name__}, not a dict")
    return state


def _damaged(run: RunDir, path: Path, stage: str, problem: str) -> InputError:
    return InputError(f"{path}: {problem}; rerun `hpcue {stage} --out {run.root}` to write it "
                      f"again")


def _tensor(run: RunDir, path: Path, stage: str, state: dict, key: str, dims: int,
            floating: bool) -> torch.Tensor:
    value = state.get(key)
    if (not isinstance(value, torch.Tensor) or value.dim() != dims
            or value.is_floating_point() != floating):
        kind = "floating" if floating else "integer"
        raise _damaged(run, path, stage, f"{key!r} should be a {dims}-d {kind} tensor")
    return value


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
    path = run.clusters
    state = _load(run, path, "cluster")
    centers = _tensor(run, path, "cluster", state, "centers", 2, floating=True)
    assignments = _tensor(run, path, "cluster", state, "assignments", 1, floating=False)
    if len(assignments) and (assignments.min() < 0 or assignments.max() >= len(centers)):
        raise _damaged(run, path, "cluster", f"assignments outside 0..{len(centers) - 1}")
    return Clusters(centers, assignments)


@dataclass
class Perturbations:
    deltas: torch.Tensor       # G x C x H x W (C: 3, or 1 on a gray data set), |delta| <= eps
    epsilon: float
    state: dict[str, Any] = field(default_factory=dict)  # what made them (generator weights)
    # N: each training image's delta, by global id; None: its cluster's (UC, the baselines)
    groups: torch.Tensor | None = None

    def groups_or(self, clusters: Clusters) -> torch.Tensor:
        """Which delta each training image gets: the saved groups, else its cluster."""
        return clusters.assignments if self.groups is None else self.groups


def check_deltas(deltas: torch.Tensor, epsilon: float, where: str) -> None:
    """Finite and within the budget: a diverged training must never become a published set."""
    if not bool(torch.isfinite(deltas).all()):
        raise NonFiniteError(f"{where}: the perturbations hold NaN or infinite values (the "
                             f"training diverged): lower train.lr and run `hpcue train` again")
    largest = float(deltas.abs().max()) if deltas.numel() else 0.0
    if largest > epsilon * (1 + 1e-5):
        raise InputError(f"{where}: a perturbation reaches {largest:.6f}, beyond epsilon "
                         f"{epsilon:.6f}")


def write_perturbations(run: RunDir, p: Perturbations) -> None:
    check_deltas(p.deltas, p.epsilon, f"{run.perturbations} (not written)")
    groups = {} if p.groups is None else {"groups": p.groups}
    _save(run.perturbations, {"deltas": p.deltas, "epsilon": p.epsilon, **groups, **p.state})


def read_perturbations(run: RunDir) -> Perturbations:
    path = run.perturbations
    state = _load(run, path, "train")
    deltas = _tensor(run, path, "train", state, "deltas", 4, floating=True)
    del state["deltas"]
    epsilon = state.pop("epsilon", None)
    if not isinstance(epsilon, float | int) or not 0 < epsilon <= 1:
        raise _damaged(run, path, "train", f"'epsilon' should be a number in (0, 1], "
                                           f"got {epsilon!r}")
    check_deltas(deltas, float(epsilon), str(path))
    groups = None
    if "groups" in state:
        groups = _tensor(run, path, "train", state, "groups", 1, floating=False)
        del state["groups"]
        if len(groups) and not 0 <= int(groups.min()) <= int(groups.max()) < len(deltas):
            raise _damaged(run, path, "train", f"'groups' should index its {len(deltas)} "
                                               f"deltas")
    return Perturbations(deltas, float(epsilon), state, groups)


def write_surrogate(run: RunDir, model: nn.Module) -> None:
    _save(run.surrogate, model.state_dict())


def write_results(run: RunDir, results: dict[str, Any]) -> None:
    atomic_write_json(run.results, results)
