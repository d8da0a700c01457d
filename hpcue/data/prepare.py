"""``hpcue data prepare``: a raw data set in, a verified shard directory out."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hpcue import console
from hpcue.data.arrays import ImageArrays, is_gray
from hpcue.data.meta_io import META, RUN_SPLITS, SOURCES, write_meta, write_sources
from hpcue.data.options import PrepareOptions
from hpcue.data.registry import importer
from hpcue.data.shard_set import open_shards
from hpcue.data.shards import COMPRESSIONS, ShardError, write_split
from hpcue.errors import InputError
from hpcue.io import atomic_write_json, read_json

__all__ = ["MANIFEST", "PrepareOptions", "is_prepared", "prepare"]


def _check_options(opts: PrepareOptions) -> None:
    if opts.compression not in COMPRESSIONS:
        raise InputError(f"unknown compression {opts.compression!r}: expected one of "
                         f"{', '.join(COMPRESSIONS)}")
    if not 0 <= opts.seed <= 2**32 - 1:
        raise InputError(f"--seed must be in 0..2**32-1, got {opts.seed}")
    if opts.shards < 1:
        raise InputError(f"--shards must be at least 1, got {opts.shards}")
    if opts.image_size < 8 or opts.image_size % 4:
        raise InputError(f"--image-size must be a multiple of 4 and at least 8, "
                         f"got {opts.image_size}")


def _check_import(name: str, root: Path | None, splits: dict[str, ImageArrays]) -> None:
    """What an importer returned, before anything is written: the splits a run reads, each
    non-empty, two or more classes shared by every split (ImageArrays checked the labels)."""
    where = f"{name} ({root})" if root is not None else name
    for split in RUN_SPLITS:
        if split not in splits:
            raise InputError(f"{where}: no {split!r} split (has {', '.join(splits) or 'none'}); "
                             f"a run needs {' and '.join(RUN_SPLITS)}")
    classes = next(iter(splits.values())).classes
    if len(set(classes)) < 2 or len(set(classes)) != len(classes):
        raise InputError(f"{where}: classes {classes[:10]}: a data set needs two or more "
                         f"distinct classes")
    for split, arrays in splits.items():
        if len(arrays) == 0:
            raise InputError(f"{where}: split {split!r} is empty")
        if arrays.classes != classes:
            raise InputError(f"{where}: split {split!r} has other classes than the rest")
    present = np.unique(splits["train"].labels)
    if len(present) < 2:
        raise InputError(f"{where}: every training image is of class {classes[present[0]]!r}; "
                         f"training needs two or more classes")


MANIFEST = "prepare.json"  # the options the shards in a directory are being written with


def _recipe(name: str, root: Path | None, opts: PrepareOptions) -> dict:
    """What decides the bytes of every shard; a directory is reused only for the same recipe."""
    return {"dataset": name, "root": str(Path(root).resolve()) if root is not None else None,
            "image_size": opts.image_size, "shards": opts.shards,
            "compression": opts.compression, "size": opts.size, "seed": opts.seed,
            "test_fraction": opts.test_fraction}


def _same_recipe(meta: dict, recipe: dict) -> bool:
    if "recipe" not in meta:  # written before recipes were recorded: data set and size decide
        return (meta["dataset"], meta["image_shape"][0]) == (recipe["dataset"],
                                                             recipe["image_size"])
    return meta["recipe"] == recipe


def is_prepared(name: str, root: Path | None, out: Path, opts: PrepareOptions) -> bool:
    """Whether ``out`` holds a finished prepare of this exact recipe."""
    return (Path(out) / META).is_file() and _same_recipe(open_shards(out).meta,
                                                         _recipe(name, root, opts))


_OURS = re.compile(rf"\w+-\d{{5}}-of-\d{{5}}\.h5|\..+\.tmp|{re.escape(META)}|{re.escape(MANIFEST)}"
                   rf"|{re.escape(SOURCES)}")


def _our_files(out: Path) -> list[Path]:
    """Shards, meta, manifest and temporaries: never a user's own file in the same folder."""
    return [p for p in out.iterdir() if p.is_file() and _OURS.fullmatch(p.name)]


def prepare(name: str, root: Path | None, out: Path, opts: PrepareOptions,
            replace_other: bool = False) -> Path:
    """Import every split into memory (all input checked first), then write shards and meta.

    A finished directory with the same recipe (data set, sizes, shards, seed, split) is reused;
    one with another recipe is an error, or is replaced when ``replace_other`` (a run
    directory's own copy). A killed prepare leaves finished shards and prepare.json; a rerun
    keeps the shards only if the recipe matches, so shards of two recipes never mix, and only
    those holding exactly the bytes it would write, so a damaged one is rewritten. An import a
    run cannot use (one class, no test split) is refused before anything is written. A failure
    removes what this call wrote.
    """
    _check_options(opts)
    source = importer(name)
    if root is None and source.needs_root:
        raise InputError(f"{name} needs --root, the folder holding its raw files "
                         f"(data.root in a config)")
    out = Path(out)
    recipe = _recipe(name, root, opts)
    if (out / META).is_file():
        meta = open_shards(out).meta
        if _same_recipe(meta, recipe):
            return out
        if not replace_other:
            raise ShardError(f"{out} already holds {meta['dataset']} prepared with "
                             f"{meta.get('recipe')}, not {recipe}; choose another --out")
    splits = source.load(root, opts.image_size, opts)
    _check_import(name, root, splits)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if not manifest.is_file() or read_json(manifest) != recipe:
        for path in _our_files(out):  # another recipe's shards must not be kept
            path.unlink()
        atomic_write_json(manifest, recipe)
    before = set(out.iterdir())
    try:
        total = sum(len(a) for a in splits.values())
        infos = {}
        with tqdm(total=total, desc=f"prepare {name}", unit="img", leave=False,
                  disable=console.bars_off()) as bar:
            for split, arrays in splits.items():
                infos[split] = write_split(out, split, arrays.images, arrays.labels,
                                           opts.shards, opts.compression, bar)
        first = next(iter(splits.values()))
        extra = {"source_root": str(root) if root else None, "compression": opts.compression,
                 "grayscale": all(is_gray(a.images) for a in splits.values()),
                 "recipe": recipe}
        if all(a.names is not None for a in splits.values()):  # for `hpcue export`
            extra["sources_sha256"] = write_sources(
                out, {split: a.names for split, a in splits.items()})
        write_meta(out, name, first.classes, first.images.shape[1:], infos, extra)
        manifest.unlink()
    except Exception:  # bad input: leave nothing; an interrupt keeps finished shards
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for path in set(out.iterdir()) - before:
                path.unlink(missing_ok=True)
        raise
    return out
