"""The shard format: a directory of HDF5 files and a ``meta.json`` that describes and checks them.

    meta.json                       format version, data set, classes, splits, shape, dtype,
                                    and per shard: file name, sample count, sha256
    <split>-00000-of-000NN.h5       images uint8 N x H x W x C (one image a chunk),
                                    labels int64 N, index int64 N (global sample ids)

A few large files instead of thousands of JPEGs keep a parallel file system fed; one image a
chunk lets a rank read any sample without decoding its neighbours. Every file is written under
a temporary name and renamed when complete, and meta.json is written last: a directory without
meta.json is an unfinished prepare.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcue.errors import HpcueError
from hpcue.io import atomic_write, atomic_write_json

FORMAT_VERSION = 1
META = "meta.json"
COMPRESSIONS = ("none", "lzf", "gzip")


class ShardError(HpcueError, ValueError):
    """A shard directory that cannot be trusted: names the file and the problem."""


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.h5"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_h5(path: Path) -> h5py.File:
    """Open a shard for reading; an unreadable file is one ShardError that names it."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 shard ({exc}); check the directory with "
                         f"`hpcue data verify {Path(path).parent}`") from None


@contextmanager
def reading(path: Path) -> Iterator[h5py.File]:
    """``with reading(path) as f``: a missing dataset or a failed read is a ShardError too."""
    with open_h5(path) as f:
        try:
            yield f
        except (OSError, KeyError) as exc:
            raise ShardError(f"{path}: damaged shard ({exc}); check the directory with "
                             f"`hpcue data verify {Path(path).parent}`") from None


def shard_bounds(n: int, num_shards: int) -> list[tuple[int, int]]:
    """Split n samples into num_shards contiguous runs whose sizes differ by at most one."""
    edges = np.linspace(0, n, num_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def write_shard(path: Path, images: np.ndarray, labels: np.ndarray, index: np.ndarray,
                compression: str = "none") -> None:
    """One HDF5 shard, atomically."""
    comp = None if compression == "none" else compression

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]),
                             compression=comp)
            f.create_dataset("labels", data=labels.astype(np.int64))
            f.create_dataset("index", data=index.astype(np.int64))

    atomic_write(path, write)


def shard_is_complete(path: Path, index: np.ndarray, shape: tuple[int, ...]) -> bool:
    """A finished shard from an interrupted prepare: same samples, same image shape."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return (f["images"].shape == (len(index), *shape)
                    and np.array_equal(f["index"][:], index))
    except (OSError, KeyError):
        return False


@dataclass(frozen=True)
class ShardInfo:
    file: str
    num_samples: int
    sha256: str


@dataclass
class ShardSet:
    """A prepared directory, read from its meta.json."""

    root: Path
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["image_shape"])  # type: ignore[return-value]

    @property
    def grayscale(self) -> bool:
        """Whether every image has R == G == B (recorded by prepare; False when not recorded)."""
        return bool(self.meta.get("grayscale", False))

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in self.meta["splits"]:
            raise ShardError(f"{self.root}: no split {split!r} (has {', '.join(self.splits)})")
        return [ShardInfo(**s) for s in self.meta["splits"][split]["shards"]]

    def size(self, split: str) -> int:
        return sum(s.num_samples for s in self.shards(split))

    def paths(self, split: str) -> list[Path]:
        return [self.root / s.file for s in self.shards(split)]

    def labels(self, split: str) -> np.ndarray:
        out = []
        for path in self.paths(split):
            with reading(path) as f:
                out.append(f["labels"][:])
        return np.concatenate(out)

    def read_split(self, split: str):
        """The whole split in memory as ImageArrays (small sets, generation, tests)."""
        from hpcue.data.arrays import ImageArrays

        images, labels = [], []
        for path in self.paths(split):
            with reading(path) as f:
                images.append(f["images"][:])
                labels.append(f["labels"][:])
        return ImageArrays(np.concatenate(images), np.concatenate(labels), self.classes)


def open_shards(root: Path) -> ShardSet:
    root = Path(root)
    meta_path = root / META
    if not meta_path.is_file():
        raise ShardError(f"{meta_path} not found: {root} is not a prepared data set "
                         f"(run `hpcue data prepare`), or its prepare did not finish")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{meta_path}: format_version {meta.get('format_version')!r}, "
                         f"this hpcue reads {FORMAT_VERSION}")
    return ShardSet(root, meta)


def write_meta(root: Path, dataset: str, classes: list[str], image_shape: tuple[int, ...],
               splits: dict[str, list[ShardInfo]], extra: dict[str, Any] | None = None) -> None:
    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "classes": list(classes),
        "image_shape": list(image_shape),
        "image_dtype": "uint8",
        "splits": {
            split: {"num_samples": sum(s.num_samples for s in shards),
                    "shards": [s.__dict__ for s in shards]}
            for split, shards in splits.items()
        },
        **(extra or {}),
    }
    atomic_write_json(Path(root) / META, meta)


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray,
                num_shards: int, compression: str = "none",
                progress=None) -> list[ShardInfo]:
    """Write one split as num_shards files, skipping shards an interrupted run finished."""
    n = len(images)
    num_shards = max(1, min(num_shards, n))
    out = []
    for i, (a, b) in enumerate(shard_bounds(n, num_shards)):
        path = Path(root) / shard_name(split, i, num_shards)
        index = np.arange(a, b, dtype=np.int64)
        if not shard_is_complete(path, index, images.shape[1:]):
            write_shard(path, images[a:b], labels[a:b], index, compression)
        out.append(ShardInfo(path.name, b - a, sha256(path)))
        if progress is not None:
            progress.update(b - a)
    return out


def verify(root: Path) -> dict[str, int]:
    """Checksums, shapes, dtypes, label ranges and counts against meta.json; returns counts."""
    shards = open_shards(root)
    num_classes = len(shards.classes)
    counts = {}
    for split in shards.splits:
        total, seen = 0, []
        for info in shards.shards(split):
            path = shards.root / info.file
            if not path.is_file():
                raise ShardError(f"{path}: missing (listed in meta.json)")
            if sha256(path) != info.sha256:
                raise ShardError(f"{path}: checksum mismatch (file changed or corrupt)")
            try:
                with h5py.File(path, "r") as f:
                    images, labels, index = f["images"], f["labels"][:], f["index"][:]
                    if images.dtype != np.uint8 or images.shape[1:] != shards.image_shape:
                        raise ShardError(f"{path}: images are {images.dtype} "
                                         f"{images.shape}, meta says uint8 N x "
                                         f"{' x '.join(map(str, shards.image_shape))}")
                    n = images.shape[0]
            except OSError as exc:
                raise ShardError(f"{path}: not a readable HDF5 shard ({exc})") from None
            if n != info.num_samples or len(labels) != n or len(index) != n:
                raise ShardError(f"{path}: {n} images, {len(labels)} labels, {len(index)} ids; "
                                 f"meta.json says {info.num_samples}")
            if n and (labels.min() < 0 or labels.max() >= num_classes):
                raise ShardError(f"{path}: labels outside 0..{num_classes - 1}")
            total += n
            seen.append(index)
        ids = np.sort(np.concatenate(seen)) if seen else np.zeros(0, np.int64)
        if not np.array_equal(ids, np.arange(total)):
            raise ShardError(f"{shards.root}: split {split!r} sample ids are not 0..{total - 1}")
        if total != shards.meta["splits"][split]["num_samples"]:
            raise ShardError(f"{shards.root}: split {split!r} has {total} samples, meta.json says "
                             f"{shards.meta['splits'][split]['num_samples']}")
        counts[split] = total
    return counts
