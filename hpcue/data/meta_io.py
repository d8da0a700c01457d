"""meta.json and sources.json on disk: read through their schema, written only when they read back.

Beside ``meta.py``, not in it: the schema checks a parsed dict and stays free of files, HDF5 and
``ShardError`` (its property tests feed it dicts); this module is the one place those two files
are read or written, and builds on ``shards.py`` (the error, ``ShardInfo``, the atomic write).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpcue.data.meta import FORMAT_VERSION, meta_problems
from hpcue.data.shards import ShardError, ShardInfo, write_bytes
from hpcue.io import atomic_write_json, file_sha256

META = "meta.json"
#: the source names of every sample (``ImageArrays.names``), beside meta.json; a directory
#: prepared before they were recorded has none, and reads and verifies as before
SOURCES = "sources.json"
#: the splits a run reads from a prepared data set; an unlearnable set (its meta.json names the
#: clean set it was made from, ``source``) is a training set only
RUN_SPLITS = ("train", "test")


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


def read_sources(root: Path, digest: str, sizes: dict[str, int]) -> dict[str, list[str]]:
    """sources.json checked against meta.json: its sha256 (``digest``, meta.json's
    ``sources_sha256``), a list of plain relative names per split, one per sample (``sizes``:
    split -> samples); anything else is one ShardError naming the file."""
    path = Path(root) / SOURCES
    if not path.is_file():
        raise ShardError(f"{path}: missing (meta.json records its sha256); prepare the data "
                         f"set again")
    if file_sha256(path) != digest:
        raise ShardError(f"{path}: checksum mismatch (file changed or corrupt); prepare the "
                         f"data set again")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))["splits"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{path}: not a sources file ({exc})") from None
    for split, size in sizes.items():
        names = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(names, list) or len(names) != size:
            raise ShardError(f"{path}: split {split!r} needs {size} names, one a sample")
        if not all(map(_plain_relative, names)):
            raise ShardError(f"{path}: split {split!r} holds names that are not relative "
                             f"paths inside a data set's root")
    return {split: splits[split] for split in sizes}


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


def needed_splits(meta: dict[str, Any]) -> tuple[str, ...]:
    """The splits a directory must hold: train and test, train only for an unlearnable set."""
    return ("train",) if "source" in meta else RUN_SPLITS
