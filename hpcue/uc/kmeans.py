"""K-means in torch: k-means++ seeding, restarts, seeded and deterministic.

Sums and counts per cluster are formed in float64 through ``reduce`` so that the distributed
version (each rank holds a slice of the features, ``reduce`` all-reduces) gives the same centers
as one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class KMeansResult:
    centers: torch.Tensor      # K x D float32
    assignments: torch.Tensor  # N int64
    inertia: float
    n_iter: int


def _sq_dists(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
    return d.clamp_min_(0)


def kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (as scikit-learn): 2 + log(k) candidates per step, keep the best."""
    n = len(x)
    trials = 2 + int(torch.log(torch.tensor(float(k))).item())
    first = torch.randint(n, (1,), generator=gen).item()
    centers = [x[first]]
    closest = _sq_dists(x, x[first][None])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: pick any
            cand = torch.randint(n, (trials,), generator=gen)
        else:
            cand = torch.multinomial(closest / total, trials, replacement=True, generator=gen)
        cand_d = torch.minimum(closest[None, :], _sq_dists(x, x[cand]).T)
        best = int(cand_d.sum(1).argmin())
        centers.append(x[cand[best]])
        closest = cand_d[best]
    return torch.stack(centers)


def lloyd(x: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float,
          reduce: Reduce | None = None) -> KMeansResult:
    """Lloyd iterations from ``centers``; ``reduce`` sums partial statistics across ranks."""
    reduce = reduce or (lambda t: t)
    k = len(centers)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        d = _sq_dists(x, centers)
        assign = d.argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums, counts = reduce(sums), reduce(counts)
        new = centers.clone()
        filled = counts > 0
        new[filled] = sums[filled] / counts[filled, None]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= tol:
            break
    d = _sq_dists(x, centers)
    assign = d.argmin(1)
    inertia = float(reduce(d.gather(1, assign[:, None]).sum()))
    return KMeansResult(centers, assign, inertia, it)


def kmeans(x: torch.Tensor, k: int, n_init: int = 5, max_iter: int = 100, tol: float = 1e-6,
           seed: int = 0) -> KMeansResult:
    """Best of ``n_init`` seeded k-means++ starts. ``tol`` is relative to the data's variance."""
    if k > len(x):
        raise ValueError(f"cannot form {k} clusters from {len(x)} points")
    x = x.double()
    abs_tol = tol * float(x.var(0).mean())
    gen = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        init = kmeans_plus_plus(x, k, gen)
        result = lloyd(x, init, max_iter, abs_tol)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    best.centers = best.centers.float()
    return best


def purity(assignments: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose cluster's majority label is their own label."""
    total = 0
    for c in assignments.unique():
        total += int(torch.bincount(labels[assignments == c]).max())
    return total / len(labels)
