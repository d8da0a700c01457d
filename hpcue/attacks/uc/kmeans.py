"""K-means in torch: k-means++ seeding, restarts, seeded and deterministic, and distributed.

Each rank may hold only a slice of the points (``ids`` gives their global positions). Per-cluster
sums and counts are formed in float64 and summed across ranks through ``reduce``; the k-means++
draw is made from the all-reduced vector of squared distances in global id order with one seeded
generator, so every rank (and a single process) draws the same seeds and reaches the same centers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class KMeansResult:
    centers: torch.Tensor      # K x D float32
    assignments: torch.Tensor  # this rank's points, int64
    inertia: float
    n_iter: int


@dataclass
class _Points:
    """This rank's slice of the data and how to combine with the other ranks."""

    x: torch.Tensor
    ids: torch.Tensor
    total: int
    reduce: Reduce

    def full_vector(self, local: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.total, dtype=local.dtype)
        full[self.ids] = local
        return self.reduce(full)

    def rows(self, want: torch.Tensor) -> torch.Tensor:
        """The points with global ids ``want``, gathered from whichever rank holds them."""
        pos = torch.full((self.total,), -1, dtype=torch.long)
        pos[self.ids] = torch.arange(len(self.ids))
        local = pos[want]
        out = torch.zeros(len(want), self.x.shape[1], dtype=self.x.dtype)
        held = local >= 0
        out[held] = self.x[local[held]]
        return self.reduce(out)


def _sq_dists(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
    return d.clamp_min_(0)


def kmeans_plus_plus(p: _Points, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (as scikit-learn): 2 + log(k) candidates per step, keep the best."""
    trials = 2 + int(torch.log(torch.tensor(float(k))).item())
    first = torch.randint(p.total, (1,), generator=gen)
    centers = [p.rows(first)[0]]
    closest = _sq_dists(p.x, centers[0][None])[:, 0]
    for _ in range(1, k):
        full = p.full_vector(closest)
        total = full.sum()
        if total <= 0:  # fewer distinct points than k: pick any
            cand = torch.randint(p.total, (trials,), generator=gen)
        else:
            cand = torch.multinomial(full / total, trials, replacement=True, generator=gen)
        cand_x = p.rows(cand)
        cand_d = torch.minimum(closest[None, :], _sq_dists(p.x, cand_x).T)
        best = int(p.reduce(cand_d.sum(1)).argmin())
        centers.append(cand_x[best])
        closest = cand_d[best]
    return torch.stack(centers)


def lloyd(x: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float,
          reduce: Reduce = _identity) -> KMeansResult:
    """Lloyd iterations from ``centers``; ``reduce`` sums partial statistics across ranks."""
    k = len(centers)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        assign = _sq_dists(x, centers).argmin(1)
        sums = reduce(torch.zeros_like(centers).index_add_(0, assign, x))
        counts = reduce(torch.bincount(assign, minlength=k).to(x.dtype))
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
           seed: int = 0, *, ids: torch.Tensor | None = None, total: int | None = None,
           reduce: Reduce = _identity) -> KMeansResult:
    """Best of ``n_init`` seeded k-means++ starts. ``tol`` is relative to the data's variance.

    Single process: pass the points. Distributed: each rank passes its slice, the slice's global
    ids, the total count and an all-reduce-sum; assignments come back for the slice.
    """
    x = x.double()
    ids = torch.arange(len(x)) if ids is None else ids.long()
    total = len(x) if total is None else total
    if k > total:
        raise ValueError(f"cannot form {k} clusters from {total} points")
    p = _Points(x, ids, total, reduce)
    s, sq = reduce(x.sum(0)), reduce((x * x).sum(0))
    abs_tol = tol * float(((sq - s * s / total) / max(total - 1, 1)).mean())
    gen = torch.Generator().manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        result = lloyd(x, kmeans_plus_plus(p, k, gen), max_iter, abs_tol, reduce)
        # restarts often reach the same partition (centers in another order); a clear margin
        # keeps the first, so float noise from summing across ranks cannot pick another order
        if best is None or result.inertia < best.inertia * (1 - 1e-9):
            best = result
    assert best is not None
    best.centers = best.centers.float()
    return best
