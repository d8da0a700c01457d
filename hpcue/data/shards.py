"""The shard format: a directory of HDF5 files and a ``meta.json`` that describes and checks them.

    meta.json                       format version, data set, classes, splits, shape, dtype,
                                    and per shard: file name, sample count, sha256
    <split>-00000-of-000NN.h5       images uint8 N x H x W x C (one image a chunk),
                                    labels int64 N, index int64 N (global sample ids)
    sources.json                    optional: per split, each sample's name in the raw data set
                                    (by sample id); meta.json holds its sha256 (sources_sha256)

A few large files instead of thousands of JPEGs keep a parallel file system fed; one image a
chunk lets a rank read any sample without decoding its neighbours. Every file is written under
a temporary name and renamed when complete, and meta.json is written last: a directory without
meta.json is an unfinished prepare. A shard is built in memory and written with plain file I/O
(HDF5 never meets a full disk).

This module holds one shard file, read and written, and ``ShardError``; it knows nothing of
meta.json, so every other module of the format builds on it: ``meta_io.py`` (meta.json and
sources.json, read through their schema, ``meta.py``, so no file they name lies outside the
directory), ``shard_set.py`` (a prepared directory: meta.json and its shards), ``verify.py``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hpcue.errors import HpcueError
from hpcue.io import atomic_write, file_sha256

COMPRESSIONS = ("none", "lzf", "gzip")
DATASETS = ("images", "labels", "index")


class ShardError(HpcueError, ValueError):
    """A shard directory that cannot be trusted: names the file and the problem."""


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.h5"


def open_h5(path: Path) -> h5py.File:
    """Open a shard for reading; an unreadable file is one ShardError that names it."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 shard ({exc}); check the directory with "
                         f"`hpcue data verify {Path(path).parent}`") from None


def _check_datasets(f: h5py.File, path: Path) -> None:
    """A shard holds images, labels and index; another name is not a shard of ours."""
    missing = [name for name in DATASETS if not isinstance(f.get(name), h5py.Dataset)]
    if missing:
        raise ShardError(f"{path}: no {' or '.join(map(repr, missing))} dataset (has "
                         f"{', '.join(map(repr, f)) or 'none'}; a shard holds "
                         f"{', '.join(DATASETS)})")


@contextmanager
def reading(path: Path) -> Iterator[h5py.File]:
    """``with reading(path) as f``: a missing dataset or a failed read is a ShardError too."""
    with open_h5(path) as f:
        _check_datasets(f, path)
        try:
            yield f
        except (OSError, KeyError) as exc:
            raise ShardError(f"{path}: damaged shard ({exc}); check the directory with "
                             f"`hpcue data verify {Path(path).parent}`") from None


def read_labels(f: h5py.File, path: Path, num_classes: int, count: int | None = None
                ) -> np.ndarray:
    """A shard's labels, checked once a shard: integers in 0..num_classes-1 (a label out of
    range would crash the loss function far from its cause), ``count`` of them when given."""
    data = f["labels"]
    if data.dtype.kind not in "iu" or data.ndim != 1:
        raise ShardError(f"{path}: labels are {data.dtype} {data.shape}, expected int64 N")
    labels = data[:].astype(np.int64)
    if count is not None and len(labels) != count:
        raise ShardError(f"{path}: {len(labels)} labels, meta.json says {count} samples")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ShardError(f"{path}: labels {labels.min()}..{labels.max()} outside "
                         f"0..{num_classes - 1} ({num_classes} classes in meta.json)")
    return labels


def shard_bounds(n: int, num_shards: int) -> list[tuple[int, int]]:
    """Split n samples into num_shards contiguous runs whose sizes differ by at most one."""
    edges = np.linspace(0, n, num_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def shard_bytes(images: np.ndarray, labels: np.ndarray, index: np.ndarray,
                compression: str = "none") -> bytes:
    """One shard's HDF5 file, built in memory (the same bytes HDF5 writes to a disk).

    HDF5 never touches the file system: a full disk fails the plain write of these bytes with
    an ordinary OSError, where a full disk inside HDF5 crashes its close (a segfault) and
    leaves the temporary behind.
    """
    comp = None if compression == "none" else compression
    with h5py.File(f"hpcue-shard-{uuid.uuid4().hex}.h5", "w", driver="core",
                   backing_store=False) as f:
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), compression=comp)
        f.create_dataset("labels", data=labels.astype(np.int64))
        f.create_dataset("index", data=index.astype(np.int64))
        f.flush()
        return f.id.get_file_image()


def write_bytes(path: Path, blob: bytes) -> None:
    """``blob`` under ``path``, atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def write_shard(path: Path, images: np.ndarray, labels: np.ndarray, index: np.ndarray,
                compression: str = "none") -> str:
    """One HDF5 shard, atomically; returns the sha256 of the bytes written."""
    blob = shard_bytes(images, labels, index, compression)
    write_bytes(path, blob)
    return hashlib.sha256(blob).hexdigest()


def holds(path: Path, blob: bytes, digest: str) -> bool:
    """Whether ``path`` already holds exactly ``blob`` (whose sha256 is ``digest``)."""
    return path.is_file() and path.stat().st_size == len(blob) and file_sha256(path) == digest


@dataclass(frozen=True)
class ShardInfo:
    file: str
    num_samples: int
    sha256: str


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray,
                num_shards: int, compression: str = "none",
                progress=None) -> list[ShardInfo]:
    """Write one split as num_shards files.

    A file an interrupted run left is kept only when it holds exactly the bytes this call
    would write (same recipe, same raw data, undamaged); anything else is rewritten, so a
    rerun never vouches for a damaged shard with a fresh checksum.
    """
    n = len(images)
    num_shards = max(1, min(num_shards, n))
    out = []
    for i, (a, b) in enumerate(shard_bounds(n, num_shards)):
        path = Path(root) / shard_name(split, i, num_shards)
        blob = shard_bytes(images[a:b], labels[a:b], np.arange(a, b, dtype=np.int64),
                           compression)
        digest = hashlib.sha256(blob).hexdigest()
        if not holds(path, blob, digest):
            write_bytes(path, blob)
        out.append(ShardInfo(path.name, b - a, digest))
        del blob
        if progress is not None:
            progress.update(b - a)
    return out
