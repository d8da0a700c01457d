"""Sharpness-aware learnability (SAL) of a victim's layers, and the Unlearnable Distance (UD)
between a poisoned victim's and a clean one's, as the public code of "How Far Are We from True
Unlearnability?" (Ye, Su, Qian; MLsecurityLab/HowFarAreFromTrueUnlearnability,
poison_train_sharp.py ``layer_sharpness`` and analysis/get_ud.py) computes them.

SAL of a layer (the weight of each Conv2d and Linear): how far its training loss can move when
that layer alone moves within a relative L2 ball (radius 0.05 of its norm): two copies of the
model, one descending and one ascending the loss by SGD (lr 0.1) over the training data, each
pass projected back into the ball, ``iterations`` passes; SAL = the larger of the rise and the
fall. It is taken after every epoch of the victim's training.

UD: a threshold splits the clean victim's layers into high and low SAL (2-means on its layers'
SAL at each epoch, the midpoint of the two centres, averaged over epochs); a victim's count is
its mean number of layers above it per epoch. The reference code reports count / clean count
(1 for the clean victim itself); UD here is |1 - that ratio|, a distance: 0 for a model against
itself, growing as a victim's high-SAL layers depart from the clean one's, either way.

Differences from the code: the reference loss is the model's loss in eval mode on the data the
copies are judged on (the code takes the epoch's running training loss, in train mode, with
augmentation, against eval-mode losses of the copies); the data are the training set without
augmentation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from hpcue.data.tensors import to_unit
from hpcue.distributed import collectives

#: (x in [0, 1], labels) batches of this rank's share of the data, each call a fresh pass
Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def layer_names(model: nn.Module) -> list[str]:
    """The parameters SAL is taken of: each Conv2d's and Linear's weight, in module order."""
    return [f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def mean_loss(model: nn.Module, batches: Batches, across_ranks: bool = True) -> float:
    """The cross-entropy over every rank's batches (one process's mean); ``across_ranks``
    False: over this rank's alone (it holds the whole set)."""
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for x, y in batches():
            total += torch.tensor([float(F.cross_entropy(model(x), y, reduction="sum")),
                                   float(len(y))], dtype=torch.float64)
    if across_ranks and collectives.active():
        total = collectives.all_reduce_sum(total)
    return float(total[0] / total[1].clamp_min(1.0))


def _moved(model: nn.Module, name: str, batches: Batches, direction: float, *,
           iterations: int, radius: float, lr: float, across_ranks: bool) -> list[float]:
    """A copy whose layer ``name`` alone descends (direction 1) or ascends (-1) the loss,
    projected into the ball after each pass; its loss after each pass."""
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    param = dict(clone.named_parameters())[name]
    param.requires_grad_(True)
    start = param.detach().clone()
    opt = torch.optim.SGD([param], lr=lr)
    losses = []
    for _ in range(iterations):
        for x, y in batches():
            opt.zero_grad()
            (direction * F.cross_entropy(clone(x), y)).backward()
            if across_ranks and collectives.active():  # the mean over ranks: one step
                param.grad = collectives.all_reduce_sum(param.grad) / collectives.world_size()
            opt.step()
        with torch.no_grad():
            diff = param - start
            times = float(diff.norm() / start.norm().clamp_min(1e-12))
            if times > radius:
                param.copy_(start + diff / times * radius)
        losses.append(mean_loss(clone, batches, across_ranks))
    return losses


def layer_sal(model: nn.Module, batches: Batches, *, iterations: int = 10,
              radius: float = 0.05, lr: float = 0.1, across_ranks: bool = True) -> list[float]:
    """SAL of each of ``layer_names(model)``: max(highest loss reached - loss, loss - lowest
    loss reached), each in [0, inf). ``across_ranks``: the batches are this rank's share of
    the data (steps and losses summed over ranks); False: the whole set, this rank alone."""
    model = model.eval()
    origin = mean_loss(model, batches, across_ranks)
    out = []
    for name in layer_names(model):
        kw = dict(iterations=iterations, radius=radius, lr=lr, across_ranks=across_ranks)
        rise = max([origin, *_moved(model, name, batches, -1.0, **kw)]) - origin
        fall = origin - min([origin, *_moved(model, name, batches, 1.0, **kw)])
        out.append(max(rise, fall))
    return out


def threshold(clean: np.ndarray) -> float:
    """The clean victim's high/low SAL split (epochs x layers in): at each epoch the midpoint
    of 2-means' centres on its layers' SAL, averaged over epochs."""
    cuts = []
    for epoch in np.atleast_2d(clean):
        centres = KMeans(n_clusters=2, random_state=0, n_init="auto").fit(
            epoch.reshape(-1, 1)).cluster_centers_
        cuts.append((centres.min() + centres.max()) / 2)
    return float(np.mean(cuts))


def unlearnable_distance(clean: np.ndarray, other: np.ndarray,
                         cut: float | None = None) -> dict:
    """``other``'s count of high-SAL layers per epoch, its ratio to the clean victim's (the
    reference code's figure) and UD = |1 - ratio|; None where the clean victim has none."""
    cut = threshold(clean) if cut is None else cut
    clean, other = np.atleast_2d(clean), np.atleast_2d(other)
    base = float((clean > cut).sum() / len(clean))
    count = float((other > cut).sum() / len(other))
    ratio = count / base if base > 0 else None
    return {"threshold": cut, "high_sal_layers": count, "clean_high_sal_layers": base,
            "ratio": ratio, "ud": None if ratio is None else abs(1.0 - ratio)}


def arm_batches(loader: Iterable, transform: Callable, device: torch.device) -> Batches:
    """A training set's batches as SAL reads them: its arm's transform, no augmentation."""
    def passes() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, ids in loader:
            images, labels, ids = images.to(device), labels.to(device), ids.to(device)
            yield to_unit(transform(images, labels, ids)), labels
    return passes


class SharpnessEachEpoch(L.Callback):
    """SAL of one victim of each training set after every epoch, kept in the module's ``sal``
    (saved in its epoch checkpoint: a resumed run keeps the epochs before the stop)."""

    def __init__(self, members: dict[str, int], loaders: dict[str, Iterable], *,
                 iterations: int, radius: float, lr: float, across_ranks: bool = True) -> None:
        self.members, self.loaders = members, loaders
        self.settings = dict(iterations=iterations, radius=radius, lr=lr,
                             across_ranks=across_ranks)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for arm, index in self.members.items():
            model = pl_module.members[index]
            batches = arm_batches(self.loaders[arm], pl_module.transforms[index],
                                  pl_module.device)
            pl_module.sal.setdefault(arm, []).append(layer_sal(model, batches,
                                                               **self.settings))
            model.train()
