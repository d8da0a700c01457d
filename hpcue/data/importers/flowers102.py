"""Oxford Flowers-102 in torchvision's on-disk layout, 102 classes, splits from setid.mat.

    <root>/flowers-102/jpg/image_00001.jpg ...
    <root>/flowers-102/imagelabels.mat   labels: 1 x N, classes 1..102
    <root>/flowers-102/setid.mat         trnid, valid, tstid: 1-based image ids
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcue.data.arrays import ImageArrays
from hpcue.data.images import decode_all, require_file
from hpcue.data.importers.base import Importer
from hpcue.data.options import PrepareOptions
from hpcue.errors import InputError, MissingInputError

SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}
NUM_CLASSES = 102


def _loadmat(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    require_file(path, "Flowers-102 annotation")
    try:
        mat = loadmat(path, squeeze_me=True)
    except Exception as exc:  # scipy raises several types for a bad file
        raise InputError(f"{path}: not a readable .mat file ({exc})") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise InputError(f"{path}: missing variables {missing}")
    return {k: np.atleast_1d(np.asarray(mat[k])).astype(np.int64) for k in keys}


def load(root: Path, image_size: int, opts: PrepareOptions) -> dict[str, ImageArrays]:
    root = Path(root)
    base = root / "flowers-102"
    if not (base / "jpg").is_dir():
        raise MissingInputError(f"{base / 'jpg'}: missing (expected torchvision's flowers-102 "
                                f"layout under {root})")
    labels_all = _loadmat(base / "imagelabels.mat", ["labels"])["labels"] - 1
    if labels_all.size and (labels_all.min() < 0 or labels_all.max() >= NUM_CLASSES):
        raise InputError(f"{base / 'imagelabels.mat'}: labels outside 1..{NUM_CLASSES}")
    setid = _loadmat(base / "setid.mat", list(SPLITS.values()))
    classes = [f"flower_{i + 1:03d}" for i in range(NUM_CLASSES)]
    out = {}
    for split, key in SPLITS.items():
        ids = setid[key]
        if ids.size == 0:
            raise InputError(f"{base / 'setid.mat'}: split {split!r} ({key}) is empty")
        if ids.min() < 1 or ids.max() > len(labels_all):
            raise InputError(f"{base / 'setid.mat'}: {key} has image ids outside "
                             f"1..{len(labels_all)}")
        paths = [require_file(base / "jpg" / f"image_{i:05d}.jpg", "listed image") for i in ids]
        out[split] = ImageArrays(decode_all(paths, image_size, f"flowers102 {split}"),
                                 labels_all[ids - 1], classes,
                                 [p.relative_to(root).as_posix() for p in paths])
    return out


IMPORTER = Importer("flowers102", tuple(SPLITS), needs_root=True, load=load, train_size=1020)
