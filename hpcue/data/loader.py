"""Torch datasets over ImageArrays, and the batch-level augmentation every stage shares."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class IndexedImages(Dataset):
    """Yields (image float 3xHxW in [0,1], label, global index): the index finds the cluster."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.images[i].permute(2, 0, 1).float().div_(255.0)
        return image, self.labels[i], i


def augment_batch(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``crop_flip``: reflect-pad by 1/8, random crop back, random horizontal flip, per sample.

    Done on the batch (on the device) so loaders stay trivial and the UC perturbation is added
    after augmentation, as in the paper.
    """
    if mode == "none":
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, device=x.device) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int,
                num_workers: int = 0, drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A seeded DataLoader: the same seed gives the same order on any machine."""
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last,
        num_workers=num_workers, persistent_workers=num_workers > 0,
    )
