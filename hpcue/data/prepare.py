"""``hpcue data prepare``: a raw data set in, a verified shard directory out."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from hpcue.data.registry import importer
from hpcue.data.shards import COMPRESSIONS, META, ShardError, open_shards, write_meta, write_split


@dataclass
class PrepareOptions:
    image_size: int = 224
    shards: int = 8
    compression: str = "none"
    size: int | None = None       # MedMNIST source resolution (28, 64, 128, 224)
    download: bool = False        # MedMNIST only, through medmnist's downloader
    seed: int = 0                 # splits that the raw data does not fix (digits, imagefolder)
    test_fraction: float = 0.25


def _check_options(opts: PrepareOptions) -> None:
    if opts.compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {opts.compression!r}: expected one of "
                         f"{', '.join(COMPRESSIONS)}")
    if opts.shards < 1:
        raise ValueError(f"--shards must be at least 1, got {opts.shards}")
    if opts.image_size < 8 or opts.image_size % 4:
        raise ValueError(f"--image-size must be a multiple of 4 and at least 8, "
                         f"got {opts.image_size}")


def prepare(name: str, root: Path | None, out: Path, opts: PrepareOptions) -> Path:
    """Import every split into memory (all input checked first), then write shards and meta.

    A finished directory for the same data set and size is reused. A failure removes what this
    call wrote; a killed prepare leaves finished shards that a rerun keeps.
    """
    _check_options(opts)
    out = Path(out)
    if (out / META).is_file():
        meta = open_shards(out).meta
        if meta["dataset"] == name and meta["image_shape"][0] == opts.image_size:
            return out
        raise ShardError(f"{out} already holds {meta['dataset']} at "
                         f"{meta['image_shape'][0]} px; choose another --out")
    splits = importer(name)(root, opts.image_size, opts)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    try:
        total = sum(len(a) for a in splits.values())
        infos = {}
        with tqdm(total=total, desc=f"prepare {name}", unit="img", leave=False) as bar:
            for split, arrays in splits.items():
                infos[split] = write_split(out, split, arrays.images, arrays.labels,
                                           opts.shards, opts.compression, bar)
        first = next(iter(splits.values()))
        write_meta(out, name, first.classes, first.images.shape[1:], infos,
                   {"source_root": str(root) if root else None, "compression": opts.compression})
    except Exception:  # bad input: leave nothing; an interrupt keeps finished shards
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for path in set(out.iterdir()) - before:
                path.unlink(missing_ok=True)
        raise
    return out
