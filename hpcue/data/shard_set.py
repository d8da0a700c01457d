"""A prepared directory: its meta.json, read and checked first, and the shards it lists.

Apart from ``shards.py`` because it reads meta.json and sources.json (``meta_io.py``), which
build on the shard file's own module: one module holding both would import in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcue.data.meta_io import META, read_meta, read_sources
from hpcue.data.shards import ShardError, ShardInfo, read_labels, reading


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

    def sources(self) -> dict[str, list[str]]:
        """sources.json, checked against this meta.json: its sha256, one name a sample."""
        return read_sources(self.root, self.meta["sources_sha256"],
                            {split: self.size(split) for split in self.splits})

    def source_names(self, split: str) -> list[str] | None:
        """Each sample's name in the raw data set, by sample id; None when prepare did not
        record them (a directory of an older hpcue, or data without files: digits)."""
        if "sources_sha256" not in self.meta:
            return None
        return self.sources()[split]

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


def open_shards(root: Path) -> ShardSet:
    """The one reader of a shard directory: a meta.json that does not fit its schema, or that
    names a file outside the directory, is refused before any shard is read or written."""
    root = Path(root)
    meta_path = root / META
    if not meta_path.is_file():
        raise ShardError(f"{meta_path} not found: {root} is not a prepared data set "
                         f"(run `hpcue data prepare`), or its prepare did not finish")
    return ShardSet(root, read_meta(meta_path))
