"""Every file of a prepared directory against its meta.json: ``hpcue data verify`` (also run
after ``data prepare``) and export's check of the unlearnable set it publishes.

Apart from ``shard_set.py``, which opens a directory without reading every byte: this is the
one reader that does (each file's checksum, every dtype, shape, label and sample id).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hpcue.data.meta_io import META, needed_splits
from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.data.shards import ShardError, ShardInfo, read_labels, reading
from hpcue.io import file_sha256


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
    if file_sha256(path) != info.sha256:
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
        shards.sources()
    return counts
