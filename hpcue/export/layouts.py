"""How an export is written and read back: lossless PNG files (class folders, or the source's own
names) or one ``.npz`` in MedMNIST's layout; one layout per ``--format``.

Every layout checks what it wrote against the shards, bit for bit, before anything is handed
over: a file that does not read back as written is an ExportError.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from hpcue.data.arrays import gray_to_rgb, is_gray
from hpcue.data.importers.medmnist_npz import PREFIX as MEDMNIST_PREFIX
from hpcue.data.shard_set import ShardSet
from hpcue.data.shards import ShardError
from hpcue.errors import HpcueError, InputError
from hpcue.export.sources import SPLIT
from hpcue.io import atomic_write, file_sha256

#: the file of ``--format npz`` (``same-as-source`` keeps the MedMNIST file's own name)
NPZ = "unlearnable.npz"
#: where a MedMNIST sample sat: ``<file>.npz:<split>_images[<row>]`` (``ImageArrays.names``)
NPZ_ROW = re.compile(r"(?P<file>[^/]+\.npz):(?P<key>\w+)\[(?P<row>\d+)\]")


class ExportError(HpcueError, RuntimeError):
    """An export that did not read back as it was written; nothing of it was kept."""


@dataclass(frozen=True)
class Sample:
    """One exported image: where it went and what it is."""

    id: int
    file: str            # relative to the export's root
    row: int | None      # its row in ``file`` when that is an array file (npz)
    label: int
    source: str | None   # its name in the raw data set, when prepare recorded it
    split: str = SPLIT
    cluster: int | None = None  # a test image's nearest center (training images: K-means')


@dataclass(frozen=True)
class Part:
    """One split of the export: its images a shard at a time (the same bits on every read),
    its size, its source names by sample id, and a test image's cluster by sample id."""

    split: str
    read: Callable[[], Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]
    size: int
    names: list[str] | None
    clusters: Callable[[int], int | None] = lambda i: None


def _png(image: np.ndarray) -> bytes:
    """Lossless PNG of one H x W x 3 uint8 image; 8-bit gray when R == G == B everywhere."""
    from PIL import Image

    gray = is_gray(image[None])
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[..., 0]) if gray else image).save(buffer, "PNG")
    return buffer.getvalue()


def _read_png(path: Path, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"{path}: written but not readable as PNG ({exc}); nothing was "
                          f"exported") from None


def _write(path: Path, blob: bytes) -> str:
    """One file of the export (a full disk is a DiskFullError naming it); its sha256."""
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))
    return hashlib.sha256(blob).hexdigest()


def _mismatch(path: Path, what: str) -> ExportError:
    return ExportError(f"{path}: {what} does not read back as written (disk or file system "
                       f"fault?); nothing was exported")


def _sample(part: Part, i: int, file: str, row: int | None, label: int) -> Sample:
    return Sample(i, file, row, label, None if part.names is None else part.names[i],
                  part.split, part.clusters(i))


@dataclass
class Files:
    """PNG files, one an image, at ``place(split, id, label)`` under the export's root."""

    place: Callable[[str, int, int], str]
    description: str

    def write(self, parts: list[Part], root: Path) -> tuple[list[Sample], dict[str, str]]:
        samples, files = [], {}
        for part in parts:
            for images, labels, index in part.read():
                for image, label, i in zip(images, labels, index, strict=True):
                    rel = self.place(part.split, int(i), int(label))
                    files[rel] = _write(root / rel, _png(image))
                    samples.append(_sample(part, int(i), rel, None, int(label)))
        if len(files) != len(samples):
            raise ExportError(f"{root}: {len(samples)} images went to {len(files)} files (two "
                              f"names map to one file); nothing was exported")
        return samples, files

    def check(self, parts: list[Part], root: Path, samples: list[Sample],
              files: dict[str, str]) -> None:
        """Every file read back from disk: its sha256, and its pixels against the shards."""
        at = {(s.split, s.id): s for s in samples}
        for part in parts:
            for images, labels, index in part.read():
                for image, label, i in zip(images, labels, index, strict=True):
                    sample = at[part.split, int(i)]
                    path = root / sample.file
                    data = path.read_bytes()
                    if (sample.label != int(label)
                            or hashlib.sha256(data).hexdigest() != files[sample.file]
                            or not np.array_equal(_read_png(path, data), image)):
                        raise _mismatch(path, f"{part.split} image {int(i)}")


@dataclass
class Npz:
    """One ``.npz`` in MedMNIST's layout: per split, ``<split>_images`` N x H x W (gray) or
    N x H x W x 3, uint8; ``<split>_labels`` N x 1 (uint8 up to 256 classes), row r at
    ``row(split, id)``."""

    file: str
    row: Callable[[str, int], int]
    description: str
    shape: tuple[int, ...]  # H x W x 3, as the shards hold it
    small: bool = True      # labels fit uint8 (up to 256 classes)

    def write(self, parts: list[Part], root: Path) -> tuple[list[Sample], dict[str, str]]:
        arrays: dict[str, np.ndarray] = {}
        samples = []
        for part in parts:
            images, labels = self._arrays(part, root, samples)
            gray = is_gray(images)  # MedMNIST's gray sets are N x H x W
            arrays[f"{part.split}_images"] = images[..., 0] if gray else images
            arrays[f"{part.split}_labels"] = labels
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        del arrays
        return samples, {self.file: _write(root / self.file, buffer.getvalue())}

    def _arrays(self, part: Part, root: Path,
                samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        n, filled = part.size, np.zeros(part.size, bool)
        images = np.empty((n, *self.shape), np.uint8)
        labels = np.empty((n, 1), np.uint8 if self.small else np.int64)
        rows_taken: set[int] = set()
        for shard_images, shard_labels, index in part.read():
            rows = np.array([self.row(part.split, int(i)) for i in index], np.int64)
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                break
            images[rows], labels[rows, 0], filled[rows] = shard_images, shard_labels, True
            rows_taken.update(rows.tolist())
            samples += [_sample(part, int(i), self.file, int(r), int(label))
                        for i, r, label in zip(index, rows, shard_labels, strict=True)]
        if not filled.all() or len(rows_taken) != n:
            raise ExportError(f"{root / self.file}: the source rows of the {n} {part.split} "
                              f"images are not 0..{n - 1} once each; nothing was exported")
        return images, labels

    def check(self, parts: list[Part], root: Path, samples: list[Sample],
              files: dict[str, str]) -> None:
        path = root / self.file
        if file_sha256(path) != files[self.file]:
            raise _mismatch(path, "the file")
        rows = {(s.split, s.id): s.row for s in samples}
        with np.load(path, allow_pickle=False) as npz:
            for part in parts:
                images = npz[f"{part.split}_images"]
                labels = npz[f"{part.split}_labels"]
                images = gray_to_rgb(images) if images.ndim == 3 else images
                for shard_images, shard_labels, index in part.read():
                    at = np.array([rows[part.split, int(i)] for i in index], np.int64)
                    if (not np.array_equal(images[at], shard_images)
                            or not np.array_equal(labels[at, 0].astype(np.int64),
                                                  shard_labels)):
                        raise _mismatch(path, f"{part.split} rows {at.min()}..{at.max()}")


Layout = Files | Npz


def class_folders(classes: list[str]) -> list[str]:
    """A folder name per class: its name, made safe for a path (no ``/``, not ``.``/``..``)."""
    out: list[str] = []
    for i, name in enumerate(classes):
        folder = name.replace("/", "_").replace("\0", "_").strip()
        if folder in ("", ".", "..") or folder in out:
            folder = f"{i:03d}_{folder}".rstrip("_.")
        out.append(folder)
    return out


def _splits(parts: list[Part]) -> str:
    return " and ".join(f"`{p.split}`" for p in parts)


def _imagefolder(shards: ShardSet, dataset: str, parts: list[Part]) -> Layout:
    folders = class_folders(shards.classes)
    width = max(5, *(len(str(p.size - 1)) for p in parts))
    return Files(lambda split, i, label: f"{split}/{folders[label]}/{i:0{width}d}.png",
                 f"`<split>/<class>/<sample id>.png` for the split{'s' * (len(parts) > 1)} "
                 f"{_splits(parts)}: one folder a class, one lossless PNG an image, named by its "
                 f"sample id (0..N-1, the order of its split)")


def _npz(shards: ShardSet, dataset: str, parts: list[Part]) -> Layout:
    return Npz(NPZ, lambda split, i: i,
               f"`{NPZ}`, MedMNIST's layout: for {_splits(parts)}, `<split>_images` (uint8, "
               f"N x H x W for a gray set, else N x H x W x 3) and `<split>_labels` (N x 1), row "
               f"i = sample id i; read it with `numpy.load`",
               shards.image_shape, len(shards.classes) <= 256)


def _png_name(name: str) -> str:
    """The source's name, as PNG: kept where it is a PNG already, else its suffix replaced."""
    path = PurePosixPath(name)
    return name if path.suffix.lower() == ".png" else str(path.with_suffix(".png"))


def _same_as_source(shards: ShardSet, dataset: str, parts: list[Part]) -> Layout:
    assert all(p.names is not None for p in parts)  # source_names refused otherwise
    named = [(p.split, i, name) for p in parts for i, name in enumerate(p.names or [])]
    names = [name for _, _, name in named]
    if dataset.startswith(MEDMNIST_PREFIX):
        rows = [NPZ_ROW.fullmatch(name) for name in names]
        bad = [name for (split, _, name), m in zip(named, rows, strict=True)
               if m is None or m["key"] != f"{split}_images"]
        files = {m["file"] for m in rows if m is not None}
        if bad or len(files) != 1:
            raise ShardError(f"{shards.root}: source names {bad[:2] or sorted(files)[:2]} are not "
                             f"rows of one npz's {_splits(parts)} images; prepare the data again")
        (file,) = files
        at = {(split, i): int(m["row"])  # type: ignore[index]
              for (split, i, _), m in zip(named, rows, strict=True)}
        return Npz(file, lambda split, i: at[split, i],
                   f"`{file}`, the source's own file name and MedMNIST's layout: for "
                   f"{_splits(parts)}, `<split>_images` (uint8, N x H x W for a gray set, else "
                   f"N x H x W x 3) and `<split>_labels` (N x 1), each image at its source row",
                   shards.image_shape, len(shards.classes) <= 256)
    pngs = [_png_name(name) for name in names]
    taken = Counter(pngs)
    # a.jpg and a.png side by side in the source: the one that was not a PNG gets a.jpg.png
    out = [png if taken[png] == 1 or name == png else f"{name}.png"
           for name, png in zip(names, pngs, strict=True)]
    if len(set(out)) != len(out):
        twice = sorted(name for name, n in Counter(out).items() if n > 1)
        raise InputError(f"{shards.root}: the source names give {twice[:3]} to two images each "
                         f"as PNG files; export with --format imagefolder")
    where = {(split, i): file for (split, i, _), file in zip(named, out, strict=True)}
    return Files(lambda split, i, label: where[split, i],
                 "the source's own folders and file names, each image a lossless PNG: a PNG "
                 "source file keeps its name, any other gets the suffix `.png` (`a.jpg` -> "
                 "`a.png`); `source` in the manifest maps every file to its original")


LAYOUTS: dict[str, Callable[[ShardSet, str, list[Part]], Layout]] = {
    "imagefolder": _imagefolder, "npz": _npz, "same-as-source": _same_as_source,
}
