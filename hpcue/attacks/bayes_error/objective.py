"""The Bayes-error estimate the attack maximises: local averaging of the class posterior with a
Gaussian kernel over a model's penultimate features (cat-claws/bayes-error-local-averaging,
``bayes_error_torch`` and ``BayesErrorImageFeature``).

Features are scaled by their largest magnitude, p_i(c) is the kernel-weighted share of class c
among the other images (the image itself left out), and the estimate is the mean over images of
1 - max_c p_i(c). Its gradient is autograd's, of the sum over images as the reference's
hand-derived one is (its scale reaches Adam only through Adam's epsilon; a mean's 1/N would also
underflow in float16 on large sets). The N x N kernel is taken a block of rows at a time,
and on W ranks each takes every W-th block: the sums then add up to one process's figures.
"""

from __future__ import annotations

import torch

from hpcue.distributed import collectives


def block_error(features: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                sigma: float, num_classes: int) -> torch.Tensor:
    """Sum over ``rows`` of 1 - max_c p_i(c), differentiable in every image's features."""
    x = features / (features.abs().max() + 1e-8)
    sims = torch.exp(-torch.cdist(x[rows], x).pow(2) / (2 * sigma ** 2))
    sims = sims * (torch.arange(len(x), device=x.device)[None, :] != rows[:, None])
    z = sims.sum(1, keepdim=True) + 1e-8
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).to(sims.dtype)
    posteriors = (sims @ onehot) / z
    return (1.0 - posteriors.max(1).values).sum()


def bayes_error_and_gradient(features: torch.Tensor, labels: torch.Tensor, sigma: float,
                             num_classes: int, block: int = 512
                             ) -> tuple[float, torch.Tensor]:
    """The mean estimate over all N images, and the gradient of their sum in the N x D features;
    the same on every rank (each rank's blocks, then one sum over ranks)."""
    n = len(features)
    x = features.detach().float().requires_grad_(True)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    rank, world = collectives.rank(), collectives.world_size()
    for k, start in enumerate(range(0, n, block)):
        if k % world != rank:
            continue
        rows = torch.arange(start, min(start + block, n), device=x.device)
        with torch.enable_grad():  # also under a caller's no_grad
            part = block_error(x, labels.to(x.device), rows, sigma, num_classes)
            part.backward()
        total += part.detach().double()
    grad = x.grad if x.grad is not None else torch.zeros_like(x)
    both = torch.cat([grad.flatten().double(), total.view(1)])
    if collectives.active():
        both = collectives.all_reduce_sum(both)
    return float(both[-1]) / max(n, 1), both[:-1].view_as(x).float()
