"""Raw data sets in their exact on-disk formats, at a few images each, as torchvision's tests do."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def jpeg(path: Path, seed: int, size: tuple[int, int] = (32, 32)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, quality=95)


def oxford_pet(root: Path, per_split: int = 6) -> Path:
    base = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    (base / "annotations").mkdir(parents=True)
    for name, start in (("trainval.txt", 1), ("test.txt", 100)):
        lines = []
        for i in range(per_split):
            cls = i % 3
            image_id = f"{breeds[cls]}_{start + i}"
            jpeg(base / "images" / f"{image_id}.jpg", seed=start + i)
            lines.append(f"{image_id} {cls + 1} {1 if cls != 1 else 2} {cls + 1}")
        (base / "annotations" / name).write_text("\n".join(lines) + "\n")
    return root


def flowers102(root: Path, n: int = 12) -> Path:
    from scipy.io import savemat

    base = root / "flowers-102"
    for i in range(1, n + 1):
        jpeg(base / "jpg" / f"image_{i:05d}.jpg", seed=i)
    savemat(base / "imagelabels.mat", {"labels": np.array([[1 + (i % 5) for i in range(n)]])})
    ids = np.arange(1, n + 1)
    savemat(base / "setid.mat", {"trnid": ids[0::3][None], "valid": ids[1::3][None],
                                 "tstid": ids[2::3][None]})
    return root


def medmnist_npz(root: Path, flag: str = "bloodmnist", size: int = 28, channels: int = 3,
                 n: int = 10) -> Path:
    rng = np.random.default_rng(0)
    shape = (size, size, channels) if channels == 3 else (size, size)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 8, (n, 1)).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    np.savez(root / name, **arrays)
    return root / name


def image_folder(root: Path, classes=("cat", "dog"), per_class: int = 5,
                 size: tuple[int, int] = (32, 32)) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            jpeg(root / name / f"{i}.jpg", seed=100 * c + i, size=size)
    return root


def png_header(path: Path, width: int, height: int) -> None:
    """A 60-byte PNG that declares width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


# -- damage done on purpose: shard directories and disks (tests and benchmarks/fault_campaign) --

def edit_meta(root: Path, change: Callable[[dict], object]) -> None:
    """Change a shard directory's meta.json in place."""
    meta = json.loads((root / "meta.json").read_text())
    change(meta)
    (root / "meta.json").write_text(json.dumps(meta))


def fix_sha(root: Path, name: str) -> None:
    """Record a shard's current checksum, so that only the checks of its content can catch it."""
    split = name.split("-")[0]
    digest = hashlib.sha256((root / name).read_bytes()).hexdigest()

    def fix(meta: dict) -> None:
        for info in meta["splits"][split]["shards"]:
            if info["file"] == name:
                info["sha256"] = digest
    edit_meta(root, fix)


def rewrite_shard(root: Path, name: str, **datasets: np.ndarray | None) -> None:
    """Replace a shard by one with other datasets (None: dropped), its checksum updated."""
    path = root / name
    with h5py.File(path, "r") as f:
        content = {k: f[k][:] for k in f}
    content.update(datasets)
    path.unlink()
    with h5py.File(path, "w") as f:
        for key, value in content.items():
            if value is not None:
                f.create_dataset(key, data=value)
    fix_sha(root, name)


def fill_disk(disk: Path, leave: int) -> Path:
    """Fill the file system under ``disk`` but for ``leave`` bytes; returns the filler."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler
