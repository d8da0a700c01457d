"""Figures a run and a report print: cluster quality, image quality, statistics over seeds."""

from __future__ import annotations

import math
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


def quality_sums(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """[squared error, SSIM summed over images, images, values] of two N x 3 x H x W batches in
    [0, 1]: partial sums that add up across shards and ranks (``psnr_ssim`` finishes them).

    SSIM is torchmetrics' (Gaussian window, 11 px or the largest odd size that fits).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    size = min(clean.shape[-2:])
    kernel = min(11, size if size % 2 else size - 1)
    # float32 is enough for 8-bit images (tested against scikit-image's float64 SSIM)
    per_image = ssim(perturbed.float(), clean.float(), data_range=1.0, kernel_size=kernel,
                     reduction="none")
    err = float(((perturbed.double() - clean.double()) ** 2).sum())
    return torch.tensor([err, float(per_image.sum()), len(clean), clean.numel()],
                        dtype=torch.float64)


def psnr_ssim(sums: torch.Tensor) -> tuple[float | None, float]:
    """PSNR in dB of the whole set (from its mean squared error; None when nothing changed)
    and the mean per-image SSIM."""
    err, ssim_total, images, values = (float(v) for v in sums)
    mse = err / values
    psnr = None if mse == 0 else 10 * math.log10(1.0 / mse)
    return psnr, ssim_total / images


def seed_summary(per_seed: Sequence[float]) -> dict:
    """Per-seed values, their mean, sample std and a 95% confidence interval for the mean
    (Student's t; None for a single seed, which says nothing about the spread)."""
    from scipy.stats import t

    n = len(per_seed)
    mean = statistics.mean(per_seed)
    std = sample_std(per_seed)
    ci = None
    if n > 1:
        half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [round(mean - half, 4), round(mean + half, 4)]
    return {"per_seed": [round(v, 4) for v in per_seed], "mean": round(mean, 4),
            "std": round(std, 4), "ci95": ci, "n": n}
