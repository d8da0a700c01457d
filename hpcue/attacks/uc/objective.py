"""The UC objective: pull each perturbed image's features to the next cluster's center."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_clusters(clusters: torch.Tensor, offset: int, num_clusters: int) -> torch.Tensor:
    """t = (k + offset) mod K."""
    return (clusters + offset) % num_clusters


def kl_to_targets(features: torch.Tensor, centers: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor:
    """Per image: KL( softmax(mu_t) || softmax(f(x')) )."""
    return F.kl_div(F.log_softmax(features, dim=1), F.softmax(centers[targets], dim=1),
                    reduction="none").sum(1)


def uc_loss(features: torch.Tensor, centers: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL( softmax(mu_t) || softmax(f(x')) )."""
    return kl_to_targets(features, centers, targets).mean()


def per_cluster_weights(clusters: torch.Tensor, counts: torch.Tensor,
                        world_size: int = 1) -> torch.Tensor:
    """Weight of each image so that generator k's loss is the mean over cluster k's images of
    the whole (all ranks') batch, as if it were trained on its own cluster alone.

    ``counts`` are the global per-cluster counts; DDP averages gradients over ranks, so each
    rank's share is scaled back up by the world size.
    """
    return world_size / counts[clusters].clamp_min(1)
