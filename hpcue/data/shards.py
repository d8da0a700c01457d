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
(HDF5 never meets a full disk); meta.json is read through its schema (``meta.py``), so no file it
names lies outside the directory.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcue.data.meta import FORMAT_VERSION, meta_problems
from hpcue.errors import HpcueError
from hpcue.io import atomic_write, atomic_write_json
from hpcue.io import file_sha256 as sha256  # noqa: F401  (hpcue.data.shards.sha256 for callers)

META = "meta.json"
#: the source names of every sample (``ImageArrays.names``), beside meta.json; a directory
#: prepared before they were recorded has none, and reads and verifies as before
SOURCES = "sources.json"
COMPRESSIONS = ("none", "lzf", "gzip")
DATASETS = ("images", "labels", "index")
#: the splits a run reads from a prepared data set; an unlearnable set (its meta.json names the
#: clean set it was made from, ``source``) is a training set only
RUN_SPLITS = ("train", "test")


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
                         f"0..{num_classes - 1} ({num_classes} classes in {META})")
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
    return path.is_file() and path.stat().st_size == len(blob) and sha256(path) == digest


@dataclass(frozen=True)
class ShardInfo:
    file: str
    num_samples: int
    sha256: str


@dataclass
class ShardSet:
    """A prepared directory, read from its meta.json (``meta``: the parsed, checked file)."""

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
        return [ShardInfo(s["file"], s["num_samples"], s["sha256"])
                for s in self.meta["splits"][split]["shards"]]

    def size(self, split: str) -> int:
        return sum(s.num_samples for s in self.shards(split))

    def paths(self, split: str) -> list[Path]:
        return [self.root / s.file for s in self.shards(split)]

    def labels(self, split: str) -> np.ndarray:
        """Every label of a split, each shard's checked against the classes and its count."""
        out = [np.zeros(0, np.int64)]
        for info in self.shards(split):
            path = self.root / info.file
            with reading(path) as f:
                out.append(read_labels(f, path, len(self.classes), info.num_samples))
        return np.concatenate(out)

    def source_names(self, split: str) -> list[str] | None:
        """Each sample's name in the raw data set, by sample id; None when prepare did not
        record them (a directory of an older hpcue, or data without files: digits)."""
        if "sources_sha256" not in self.meta:
            return None
        return read_sources(self)[split]

    def read_split(self, split: str):
        """The whole split in memory as ImageArrays (small sets, generation, tests)."""
        from hpcue.data.arrays import ImageArrays

        images, labels = [], []
        for info in self.shards(split):
            path = self.root / info.file
            with reading(path) as f:
                labels.append(read_labels(f, path, len(self.classes), info.num_samples))
                images.append(f["images"][:])
            if len(images[-1]) != info.num_samples:
                raise ShardError(f"{path}: {len(images[-1])} images, meta.json says "
                                 f"{info.num_samples}")
        if not images:
            raise ShardError(f"{self.root}: split {split!r} has no shards")
        return ImageArrays(np.concatenate(images), np.concatenate(labels), self.classes)


def _plain_relative(name: object) -> bool:
    """A name that stays inside any folder it is joined to: relative, POSIX, no ``..``."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def write_sources(root: Path, names: dict[str, list[str]]) -> str:
    """sources.json (split -> names by sample id), atomically; returns its sha256, which
    meta.json keeps as ``sources_sha256`` so that a changed file is caught like a shard."""
    bad = [n for split in names.values() for n in split if not _plain_relative(n)]
    if bad:
        raise ShardError(f"{Path(root) / SOURCES}: not written: {bad[:3]} are not relative "
                         f"names inside a data set's root")
    blob = (json.dumps({"splits": names}, indent=0) + "\n").encode()
    write_bytes(Path(root) / SOURCES, blob)
    return hashlib.sha256(blob).hexdigest()


def read_sources(shards: ShardSet) -> dict[str, list[str]]:
    """sources.json checked against meta.json: its sha256, a list of plain relative names per
    split, one per sample; anything else is one ShardError naming the file."""
    path = shards.root / SOURCES
    if not path.is_file():
        raise ShardError(f"{path}: missing (meta.json records its sha256); prepare the data "
                         f"set again")
    if sha256(path) != shards.meta["sources_sha256"]:
        raise ShardError(f"{path}: checksum mismatch (file changed or corrupt); prepare the "
                         f"data set again")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))["splits"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{path}: not a sources file ({exc})") from None
    for split in shards.splits:
        names = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(names, list) or len(names) != shards.size(split):
            raise ShardError(f"{path}: split {split!r} needs {shards.size(split)} names, one "
                             f"a sample")
        if not all(map(_plain_relative, names)):
            raise ShardError(f"{path}: split {split!r} holds names that are not relative "
                             f"paths inside a data set's root")
    return {split: splits[split] for split in shards.splits}


def read_meta(meta_path: Path) -> dict[str, Any]:
    """meta.json parsed and checked against its schema; anything else is one ShardError."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{meta_path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ShardError(f"{meta_path}: not valid JSON (nested too deeply)") from None
    if isinstance(meta, dict) and "format_version" in meta and (
            meta["format_version"] != FORMAT_VERSION or type(meta["format_version"]) is not int):
        raise ShardError(f"{meta_path}: format_version {meta['format_version']!r}, "
                         f"this hpcue reads {FORMAT_VERSION}")
    problems = meta_problems(meta)
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ShardError(f"{meta_path}: {'; '.join(problems[:5])}{more}")
    return meta


def open_shards(root: Path) -> ShardSet:
    """The one reader of a shard directory: a meta.json that does not fit its schema, or that
    names a file outside the directory, is refused before any shard is read or written."""
    root = Path(root)
    meta_path = root / META
    if not meta_path.is_file():
        raise ShardError(f"{meta_path} not found: {root} is not a prepared data set "
                         f"(run `hpcue data prepare`), or its prepare did not finish")
    return ShardSet(root, read_meta(meta_path))


def write_meta(root: Path, dataset: str, classes: list[str], image_shape: tuple[int, ...],
               splits: dict[str, list[ShardInfo]], extra: dict[str, Any] | None = None) -> None:
    """meta.json, last; refused (never written) when it would not read back."""
    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "classes": list(classes),
        "image_shape": [int(d) for d in image_shape],
        "image_dtype": "uint8",
        "splits": {
            split: {"num_samples": sum(s.num_samples for s in shards),
                    "shards": [dict(s.__dict__) for s in shards]}
            for split, shards in splits.items()
        },
        **(extra or {}),
    }
    problems = meta_problems(meta)
    if problems:
        raise ShardError(f"{Path(root) / META}: not written: {'; '.join(problems[:5])}")
    atomic_write_json(Path(root) / META, meta)


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


def needed_splits(meta: dict[str, Any]) -> tuple[str, ...]:
    """The splits a directory must hold: train and test, train only for an unlearnable set."""
    return ("train",) if "source" in meta else RUN_SPLITS


def _check_splits(shards: ShardSet) -> None:
    meta_path = shards.root / META
    needed = needed_splits(shards.meta)
    for split in needed:
        if split not in shards.meta["splits"]:
            raise ShardError(f"{meta_path}: no {split!r} split (has "
                             f"{', '.join(shards.splits) or 'none'}); a data set for a run "
                             f"needs {' and '.join(needed)}")
        if shards.meta["splits"][split]["num_samples"] == 0:
            raise ShardError(f"{meta_path}: split {split!r} is empty")


def _check_int64(f: h5py.File, path: Path, name: str) -> None:
    if f[name].dtype != np.int64 or f[name].ndim != 1:
        raise ShardError(f"{path}: {name} are {f[name].dtype} {f[name].shape}, expected int64 N")


def _verify_shard(shards: ShardSet, info: ShardInfo) -> tuple[np.ndarray, np.ndarray]:
    """One shard against meta.json; returns its labels and sample ids."""
    path = shards.root / info.file
    if not path.is_file():
        raise ShardError(f"{path}: missing (listed in meta.json)")
    if sha256(path) != info.sha256:
        raise ShardError(f"{path}: checksum mismatch (file changed or corrupt)")
    with reading(path) as f:
        images = f["images"]
        if images.dtype != np.uint8 or images.shape[1:] != shards.image_shape:
            raise ShardError(f"{path}: images are {images.dtype} {images.shape}, meta says "
                             f"uint8 N x {' x '.join(map(str, shards.image_shape))}")
        _check_int64(f, path, "labels")
        _check_int64(f, path, "index")
        n = images.shape[0]
        labels = read_labels(f, path, len(shards.classes))
        index = f["index"][:]
    if n != info.num_samples or len(labels) != n or len(index) != n:
        raise ShardError(f"{path}: {n} images, {len(labels)} labels, {len(index)} ids; "
                         f"meta.json says {info.num_samples}")
    return labels, index


def verify(root: Path) -> dict[str, int]:
    """Checksums, shapes, dtypes, label ranges, counts and the splits a run needs against
    meta.json; returns counts."""
    shards = open_shards(root)
    _check_splits(shards)
    counts = {}
    for split in shards.splits:
        labels, ids = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for info in shards.shards(split):
            shard_labels, index = _verify_shard(shards, info)
            labels.append(shard_labels)
            ids.append(index)
        total = sum(map(len, ids))
        if not np.array_equal(np.sort(np.concatenate(ids)), np.arange(total)):
            raise ShardError(f"{shards.root}: split {split!r} sample ids are not 0..{total - 1}")
        present = np.unique(np.concatenate(labels))
        if split == "train" and len(present) < 2:
            raise ShardError(f"{shards.root}: split 'train' holds only class "
                             f"{shards.classes[present[0]]!r}; training needs two or more")
        counts[split] = total
    if "sources_sha256" in shards.meta:
        read_sources(shards)
    return counts
