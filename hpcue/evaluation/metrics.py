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


#: how every interval in results.json is made (docs/evaluation.md says why)
INTERVAL_METHOD = ("95%: mean ± t(n-1) x sqrt(seed variance / n + test variance), where the test "
                   "variance is that of the seeds' mean over a resampled test set (closed-form "
                   "bootstrap over test images); n = victim seeds; clipped to [0, 1] (an "
                   "accuracy) or [-1, 1] (a paired difference)")
#: below this many test images the test term's normal approximation is rough: an accuracy near
#: 0 or 1 has a skewed binomial spread the symmetric interval misses (it is clipped to [0, 1]
#: rather than reaching past it), and one image moves a figure by a point or more. 100 is the
#: usual rule of thumb for n·p and n·(1 - p) to be large enough at the accuracies seen here.
SMALL_TEST_SET = 100


def interval_warnings(n_test_images: int) -> list[str]:
    """What results.json's ``warnings`` and the run's last lines say about its intervals: a
    test set under ``SMALL_TEST_SET`` images, whose intervals are only roughly 95%."""
    if n_test_images >= SMALL_TEST_SET:
        return []
    return [f"the test set has {n_test_images} images (under {SMALL_TEST_SET}): every 95% "
            f"interval leans on a normal approximation that is rough at this size (intervals "
            f"are clipped to [0, 1], differences to [-1, 1]); read them as indications, or "
            f"hold out more test images"]


def sampling_variance(outcomes: torch.Tensor) -> float:
    """How much the seeds' mean would move if the test images were drawn again: the variance
    of the per-image outcome (right = 1, or a paired difference of two arms' outcomes),
    averaged over seeds, divided by the number of test images. ``outcomes``: seeds x images.

    This is what a bootstrap over test images (seeds held fixed) estimates, in closed form:
    no random draws, the same figure every time.
    """
    per_image = outcomes.double().mean(0)
    if per_image.numel() < 2:
        return 0.0
    return float(per_image.var(unbiased=True)) / per_image.numel()


def seed_summary(per_seed: Sequence[float], test_var: float | None = None,
                 n_test_images: int | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Per-seed values, their mean, sample std and a 95% interval for the mean.

    The interval counts both sources of error: the victims' seeds (Student's t over n seeds)
    and the test set's own sampling (``test_var``, from ``sampling_variance``), so identical
    per-seed figures never give a zero-width interval when a different test set could have
    moved them. One seed says nothing about the spread: no interval (None). The interval is
    clipped to ``bounds`` (an accuracy lies in [0, 1], a difference of two in [-1, 1]).
    """
    from scipy.stats import t

    n = len(per_seed)
    mean = statistics.mean(per_seed)
    std = sample_std(per_seed)
    ci = None
    if n > 1:
        half = float(t.ppf(0.975, n - 1)) * math.sqrt(std ** 2 / n + (test_var or 0.0))
        ci = [round(max(bounds[0], mean - half), 4), round(min(bounds[1], mean + half), 4)]
    out = {"per_seed": [round(v, 4) for v in per_seed], "mean": round(mean, 4),
           "std": round(std, 4), "ci95": ci, "n": n}
    if test_var is not None:
        out |= {"test_se": round(math.sqrt(test_var), 5), "n_test_images": n_test_images}
    return out


def pooled_summary(summaries: Sequence[dict], bounds: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Several runs' summaries of one arm as one (their seeds pooled). The test term is the
    runs' mean test variance: the bound for test sets that may overlap (the variance of a mean
    of correlated figures is at most the mean of their variances)."""
    values = [v for s in summaries for v in s["per_seed"]]
    test_ses = [s["test_se"] for s in summaries if s.get("test_se") is not None]
    test_var = statistics.mean(se ** 2 for se in test_ses) if test_ses else None
    images = sorted({s.get("n_test_images") for s in summaries} - {None})
    return seed_summary(values, test_var, images[0] if len(images) == 1 else None, bounds)
