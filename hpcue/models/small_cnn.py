"""A small CNN for the debugging mode: surrogate and victim on tiny images, seconds on a CPU."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Normalisation, three conv blocks, global average pool, ``fc``: features are the input
    of ``fc``.

    [0, 1] images in. The normalisation is part of the model (fixed, not in the state dict), so
    the same one applies when the CNN is trained and when it serves as a frozen surrogate.
    """

    MEAN = STD = 0.5

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), self.MEAN), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), self.STD), persistent=False)
        self.body = nn.Sequential(
            _block(3, width), _block(width, width), nn.MaxPool2d(2),
            _block(width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
