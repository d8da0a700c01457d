"""How a raw data set is turned into shards: the options every importer and ``prepare`` read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PrepareOptions:
    image_size: int = 224
    shards: int = 8
    compression: str = "none"
    size: int | None = None       # MedMNIST source resolution (28, 64, 128, 224)
    download: bool = False        # MedMNIST only, through medmnist's downloader
    seed: int = 0                 # splits that the raw data does not fix (digits, imagefolder)
    test_fraction: float = 0.25
