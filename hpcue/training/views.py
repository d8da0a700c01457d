"""The contrastive-like strong augmentation: kornia's, so every image draws its own crop, jitter
and grayscale and a gradient reaches the images through them. AUE and AAP craft their noise
through it; the contrastive victims (evaluation/contrastive.py) learn from two of its views (at
strength 1 it is SimCLR's)."""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


def strong_augmentation(size: int, strength: float) -> nn.Module:
    """AUE-AAP's ``Augment(s)`` (utils.py): resized crop of scale (max(1 - 0.9 s, 0.05), 1),
    flip, colour jitter 0.4 s (hue 0.1 s) at p min(0.99, 0.8 s), grayscale at p 0.2 s."""
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(max(1 - 0.9 * strength, 0.05), 1.0)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(0.4 * strength, 0.4 * strength, 0.4 * strength, 0.1 * strength,
                      p=min(0.99, 0.8 * strength)),
        K.RandomGrayscale(p=0.2 * strength),
    )


def seeded(augment: nn.Module, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``augment(images)`` with its draws taken from ``generator``, not from the global RNG, so a
    resumed run sees the same augmentation; an empty batch passes through."""
    if len(images) == 0:
        return images
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return augment(images)
