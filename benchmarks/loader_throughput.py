"""Loader throughput at 224 px: hpcue's HDF5 shards against a JPEG folder and an in-memory ceiling.

hpcue prepares data once into a few HDF5 shards (uint8, one image a chunk) so that training reads
raw pixels instead of decoding thousands of JPEGs. This script checks that the trade pays off, by
timing, in one run and on the same images:

    hdf5     hpcue.data.loader.ShardDataset over a prepared shard directory ("train" split)
    jpeg     torchvision ImageFolder decoding the source JPEGs (pil_to_tensor: uint8 CHW)
    memory   the same uint8 arrays already in memory, as uint8 CHW tensors

All three yield uint8 batches, as hpcue's loaders do: the float conversion happens on the device
after the transfer (hpcue.data.loader.to_unit), identical for every source and not measured.

each through the same shuffled torch DataLoader, for num_workers 0 and 2. Every pass is one
untimed warm-up pass then --epochs timed passes; a rate is images actually read per second in
the fastest timed pass.

Targets: hdf5 at least 5x the JPEG folder and at least 50% of the memory ceiling.

    python benchmarks/loader_throughput.py [--images 1024] [--batch 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from hpcue.data.loader import ShardDataset
from hpcue.data.prepare import PrepareOptions, prepare
from hpcue.data.shard_set import open_shards

SIZE = 224
CLASSES = 8
WORKERS = (0, 2)
TARGET_JPEG = 5.0    # hdf5 / jpeg folder at least this
TARGET_MEMORY = 0.5  # hdf5 / memory ceiling at least this


def fake_image(rng: np.random.Generator) -> np.ndarray:
    """Smooth colour gradients and a low-frequency wave plus pixel noise, 224 x 224 x 3 uint8."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    out = np.empty((SIZE, SIZE, 3), np.float32)
    for c in range(3):
        a, b, f, p = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(1, 6), rng.uniform(0, 6)
        out[..., c] = 128 + 60 * (a * x + b * y) + 40 * np.sin(f * (x + y) * np.pi + p)
    out += rng.normal(0, 8, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """root/<class>/<i>.jpg: n JPEGs (quality 90) spread over CLASSES class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fake_image(rng)).save(folder / f"{i:05d}.jpg", quality=90)


class MemoryImages(Dataset):
    """uint8 N x H x W x 3 in memory; items shaped exactly as ShardDataset shapes them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).permute(2, 0, 1), int(self.labels[i]), i


def make_loader(dataset: Dataset, batch: int, workers: int) -> DataLoader:
    """The one DataLoader configuration every contender gets."""
    return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0)


def one_pass(loader: DataLoader) -> int:
    """Images read in one full pass."""
    return sum(int(batch[0].shape[0]) for batch in loader)


def rate(dataset: Dataset, batch: int, workers: int, epochs: int) -> float:
    """Images per second of the fastest of `epochs` timed passes, after one warm-up pass.

    The fastest pass, not the mean: on a shared machine other processes only ever slow a pass.
    """
    loader = make_loader(dataset, batch, workers)
    one_pass(loader)
    best = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        seen = one_pass(loader)
        best = max(best, seen / (time.perf_counter() - start))
    del loader  # shuts persistent workers down
    return best


def build(tmp: Path, n: int) -> dict[str, Callable[[], Dataset]]:
    """Fabricate the JPEG folder, prepare shards from it, and return the three contenders."""
    root, out = tmp / "jpeg", tmp / "shards"
    make_folder(root, n)
    prepare("imagefolder", root, out, PrepareOptions(image_size=SIZE, shards=4))
    shards = open_shards(out)
    train = shards.read_split("train")
    return {
        "hdf5": lambda: ShardDataset(shards, "train"),
        "jpeg": lambda: ImageFolder(str(root), transform=pil_to_tensor),
        "memory": lambda: MemoryImages(train.images, train.labels),
    }


def verdict(value: float, target: float) -> str:
    return "ok" if value >= target else "BELOW"


def report(rates: dict[tuple[str, int], float], sizes: dict[str, int]) -> None:
    print(f"\n{'loader':<8} {'images':>7} {'workers':>8} {'images/s':>10}")
    for (name, workers), r in rates.items():
        print(f"{name:<8} {sizes[name]:>7} {workers:>8} {r:>10.0f}")
    print()
    for workers in WORKERS:
        hdf5 = rates["hdf5", workers]
        vs_jpeg = hdf5 / rates["jpeg", workers]
        vs_mem = hdf5 / rates["memory", workers]
        print(f"workers={workers}: hdf5 / jpeg folder = {vs_jpeg:5.2f}x "
              f"(target >= {TARGET_JPEG:.0f}x: {verdict(vs_jpeg, TARGET_JPEG)}); "
              f"hdf5 / memory ceiling = {vs_mem:4.0%} "
              f"(target >= {TARGET_MEMORY:.0%}: {verdict(vs_mem, TARGET_MEMORY)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="JPEGs to fabricate (all classes)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="timed passes after one warm-up pass")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="hpcue-loader-") as tmp:
        t0 = time.perf_counter()
        contenders = build(Path(tmp), args.images)
        print(f"setup: {args.images} JPEGs at {SIZE} px, prepared into 4 shards in "
              f"{time.perf_counter() - t0:.1f} s; batch {args.batch}, {args.epochs} timed "
              f"pass(es) after 1 warm-up, torch threads 1")
        rates, sizes = {}, {}
        for workers in WORKERS:
            for name, make in contenders.items():
                dataset = make()
                sizes[name] = len(dataset)
                rates[name, workers] = rate(dataset, args.batch, workers, args.epochs)
        report(rates, sizes)


if __name__ == "__main__":
    main()
