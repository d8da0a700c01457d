"""Figures a run and a report print: cluster quality, and statistics over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch


def purity(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose cluster's majority label is their own label."""
    total = 0
    for c in assignments.unique():
        total += int(torch.bincount(labels[assignments == c]).max())
    return total / len(labels)


def nmi(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """Normalized mutual information between clusters and labels (scikit-learn's)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels, assignments))


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation; 0 for a single value (no spread can be measured)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0
