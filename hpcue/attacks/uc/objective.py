"""The UC objective: pull each perturbed image's features to the next cluster's center."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_clusters(clusters: torch.Tensor, offset: int, num_clusters: int) -> torch.Tensor:
    """t = (k + offset) mod K."""
    return (clusters + offset) % num_clusters


def uc_loss(features: torch.Tensor, centers: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL( softmax(mu_t) || softmax(f(x')) )."""
    return F.kl_div(F.log_softmax(features, dim=1), F.softmax(centers[targets], dim=1),
                    reduction="batchmean")
