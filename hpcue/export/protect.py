"""The test split, protected the way UC protects an image it did not train on.

A run perturbs only its training split and measures the protection on the clean test split;
the user gave both, so an export publishes both. A test image belongs to no K-means cluster:
it gets the perturbation of its nearest cluster center in the run's surrogate feature space
(the surrogate and feature extraction the cluster stage used), applied and rounded to uint8
exactly as the generate stage does a training image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hpcue.config import load_config
from hpcue.data.shard_set import ShardSet
from hpcue.errors import InputError
from hpcue.export.sources import TEST, read_shards
from hpcue.models.surrogate import build_surrogate
from hpcue.stages.artifacts import read_clusters, read_perturbations
from hpcue.stages.cluster import extract_features
from hpcue.stages.generate import perturb_uint8
from hpcue.stages.rundir import RunDir


@dataclass
class ProtectedTest:
    """The clean test split and, by sample id, the cluster whose perturbation each image gets."""

    clean: ShardSet
    deltas: torch.Tensor       # G x C x H x W, the run's perturbations
    clusters: torch.Tensor     # N: each test image's nearest center

    @property
    def size(self) -> int:
        return self.clean.size(TEST)

    def read(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(protected images, labels, sample ids) a shard at a time; the same bits every
        time (an element-wise perturbation and rounding), so a read-back compares exactly."""
        for images, labels, index in read_shards(self.clean, TEST):
            groups = self.clusters[torch.from_numpy(index)]
            yield perturb_uint8(images, self.deltas, groups), labels, index


def _surrogate(run: RunDir):
    """The run's surrogate, with the weights its cluster stage used (StageContext.surrogate)."""
    cfg = load_config(run.require(run.config, "cluster"))
    s = cfg.surrogate
    weights = s.weights
    if s.arch == "small_cnn" and weights is None:
        weights = run.require(run.surrogate, "cluster")
    return build_surrogate(s.arch, weights), cfg


def _batches(clean: ShardSet, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]]:
    """The test split as the cluster stage's loader yields the training one: uint8 N x C x H x W,
    labels, sample ids."""
    for images, labels, index in read_shards(clean, TEST):
        for i in range(0, len(images), size):
            yield (torch.from_numpy(images[i:i + size]).permute(0, 3, 1, 2),
                   torch.from_numpy(labels[i:i + size]), torch.from_numpy(index[i:i + size]))


def _attack(run: RunDir) -> str:
    """The attack named in the run's stage record, or "unknown" (one made before it was)."""
    try:
        return str(json.loads(run.stage_record("train").read_text())["attack"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def protect_test(run: RunDir, clean: ShardSet, image_shape: tuple[int, ...]) -> ProtectedTest:
    """Each clean test image's nearest cluster center, from the run's clusters, surrogate and
    perturbations (each missing one is an error naming the stage that writes it)."""
    if clean.image_shape != image_shape:
        raise InputError(f"{clean.root}: its images are {clean.image_shape}, the unlearnable "
                         f"set's {image_shape}: export with --train-only")
    clusters, perturbations = read_clusters(run), read_perturbations(run)
    if perturbations.groups is not None:  # one delta per image or per class: none is a cluster's
        raise InputError(f"{run.root}: its perturbations were made per image or per class "
                         f"(attack {_attack(run)}), so a test image has no cluster's to take: "
                         f"export with --train-only")
    if len(perturbations.deltas) != clusters.num_clusters:
        raise InputError(f"{run.root}: {len(perturbations.deltas)} perturbations for "
                         f"{clusters.num_clusters} clusters: run `hpcue train` again")
    surrogate, cfg = _surrogate(run)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feats, ids = extract_features(surrogate, _batches(clean, cfg.cluster.batch_size), device,
                                  cfg.runtime.precision)
    centers = clusters.centers.float()
    if feats.shape[1] != centers.shape[1]:
        raise InputError(f"{run.clusters}: centers of {centers.shape[1]} features, the "
                         f"surrogate gives {feats.shape[1]}: run `hpcue cluster` again")
    nearest = torch.cdist(feats, centers).argmin(1)
    by_id = torch.empty(clean.size(TEST), dtype=torch.long)
    by_id[ids.long()] = nearest
    return ProtectedTest(clean, perturbations.deltas, by_id)
