"""``hpcue export``: a run's unlearnable training set, out of the shards, in a form others read.

A protected set is made to be published; inside a run directory it exists only as HDF5 shards.
``export_run`` writes it as plain files: PNG class folders (``imagefolder``), MedMNIST's ``.npz``
layout (``npz``), or the raw data set's own layout and names (``same-as-source``), always with
``manifest.json`` (every file, label, class, sha256; the eps, K and surrogate that made it) and a
``README.md`` for whoever receives it.

Only the training split is exported: it is the only one perturbed (a receiver evaluates on the
original, clean test split). Every pixel is written losslessly and read back bit for bit before
anything is handed over: the export is built in a temporary sibling folder and renamed into
place at the end, so a failure of any kind leaves nothing. An existing, non-empty ``out`` is
never touched.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hpcue import __version__
from hpcue.data.arrays import gray_to_rgb, is_gray
from hpcue.data.importers.medmnist_npz import PREFIX as MEDMNIST_PREFIX
from hpcue.data.shards import (
    META,
    ShardError,
    ShardSet,
    open_shards,
    read_labels,
    reading,
    sha256,
    verify,
)
from hpcue.errors import HpcueError, InputError, MissingInputError
from hpcue.io import atomic_write, atomic_write_json, atomic_write_text, exclusive, read_json
from hpcue.stages.rundir import RunDir, StageInputError

FORMATS = ("imagefolder", "npz", "same-as-source")
MANIFEST = "manifest.json"
README = "README.md"
#: the file of ``--format npz`` (``same-as-source`` keeps the MedMNIST file's own name)
NPZ = "unlearnable.npz"
SPLIT = "train"  # the one split a run perturbs
METHOD = "unlearnable clusters"
#: the data sets that have no source files to be named after (scikit-learn's embedded digits)
NO_FILES = ("digits",)
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


def export_run(run_dir: Path, fmt: str, out: Path) -> dict[str, Any]:
    """Write ``run_dir``'s unlearnable training set to the new folder ``out`` as ``fmt``.

    Returns ``{"format", "out", "images", "classes"}``. Bad input (no run directory, no
    unlearnable set, damaged shards, an unknown format, an ``out`` that holds something) is
    one HpcueError before anything is written.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise MissingInputError(f"{run.root}: run directory not found")
    out = Path(out)
    _check_out(out)
    # a pipeline command working in the run (rewriting unlearnable/) holds its lock
    lock = (exclusive(run.lock, f"run directory {run.root}")
            if os.access(run.lock, os.W_OK) else nullcontext())
    with lock:
        shards = _unlearnable(run)
        dataset = shards.meta["dataset"].removesuffix("+uc")
        names = _source_names(run, shards, dataset, required=fmt == "same-as-source")
        method = _method(run)
        layout = _LAYOUTS[fmt](shards, dataset, names)
        parent = out.absolute().parent
        made = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
        tmp = parent / f"{out.absolute().name}.partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            samples, files = layout.write(shards, tmp)
            layout.check(shards, tmp, samples, files)
            atomic_write_json(tmp / MANIFEST,
                              _manifest(fmt, shards, dataset, method, samples, files))
            atomic_write_text(tmp / README, _readme(fmt, shards, dataset, method, layout))
            _check_out(out)  # nothing may have appeared there meanwhile
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            for folder in made:  # the parents this call created, while they are empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
    return {"format": fmt, "out": str(out), "images": len(samples),
            "classes": len(shards.classes)}


# -- what is read: the run's unlearnable set, its source names, how it was made --

def _check_out(out: Path) -> None:
    if out.is_file() or out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out} exists and is not a plain folder: export into a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: export into a new or empty folder "
                         f"(nothing in it was changed)")


def _unlearnable(run: RunDir) -> ShardSet:
    """The run's unlearnable set, verified (checksums, shapes, labels) before it is read."""
    if not (run.unlearnable / META).is_file():
        raise StageInputError(f"{run.root}: no unlearnable set ({run.unlearnable / META} not "
                              f"found): run `hpcue generate --out {run.root}` first (or `hpcue "
                              f"run` for the whole pipeline)")
    verify(run.unlearnable)
    return open_shards(run.unlearnable)


def _clean_set(run: RunDir, shards: ShardSet, dataset: str) -> ShardSet | None:
    """The clean data set the unlearnable one was made from: its meta.json's ``source`` (as
    written, relative to where generate ran), else the run's own ``data/``; it must hold the
    same training shards (names and counts) of the same data set."""
    source = shards.meta.get("source")
    candidates = [Path(source)] if isinstance(source, str) else []
    candidates.append(run.data)
    want = [(s.file, s.num_samples) for s in shards.shards(SPLIT)]
    for root in candidates:
        if not (root / META).is_file():
            continue
        clean = open_shards(root)
        if (clean.meta["dataset"] == dataset and SPLIT in clean.splits
                and [(s.file, s.num_samples) for s in clean.shards(SPLIT)] == want):
            return clean
    return None


def _source_names(run: RunDir, shards: ShardSet, dataset: str,
                  required: bool) -> list[str] | None:
    """Each training sample's name in the raw data set, by sample id; None when unknown.

    ``required`` (same-as-source): unknown names are an error saying what to do instead.
    """
    if required and dataset in NO_FILES:
        raise InputError(f"{run.root}: {dataset} has no source files to keep the names of (it "
                         f"is scikit-learn's embedded data): export with --format imagefolder "
                         f"or --format npz")
    try:
        clean = _clean_set(run, shards, dataset)
        names = None if clean is None else clean.source_names(SPLIT)
    except ShardError:
        if required:
            raise
        return None  # the names only annotate the manifest of the other formats
    if required and clean is None:
        raise MissingInputError(
            f"{run.root}: the clean data set the unlearnable one was made from, whose source "
            f"file names same-as-source keeps, is not found ({shards.meta.get('source')}, nor "
            f"{run.data}): export from where the run was made, or with --format imagefolder or "
            f"--format npz")
    if required and names is None:
        raise InputError(f"{run.root}: the clean data set it was made from ({clean.root}) does "
                         f"not record its source file names (prepared by an older hpcue): "
                         f"prepare the data again into a new folder and rerun, or export with "
                         f"--format imagefolder or --format npz")
    return names


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _method(run: RunDir) -> dict[str, Any]:
    """How the set was made, from results.json where the run finished, else the records;
    what neither says is None (written "not recorded")."""
    records = {stage: read_json(run.stage_record(stage))
               for stage in ("cluster", "train", "generate", "evaluate")
               if run.stage_record(stage).is_file()}
    results = read_json(run.results) if run.finished else {}
    cluster, train = records.get("cluster", {}), records.get("train", {})
    generate = records.get("generate", {})
    eps = _number(results.get("epsilon", train.get("epsilon")))
    surrogate = results.get("surrogate", (cluster.get("config") or {}).get("surrogate.arch"))
    return {
        "name": METHOD,
        "epsilon": eps,
        "epsilon_255": None if eps is None else round(eps * 255, 3),
        "num_clusters": _number(results.get("num_clusters", cluster.get("num_clusters"))),
        "surrogate": surrogate if isinstance(surrogate, str) else None,
        "perturbation_channels": _number(results.get("perturbation_channels",
                                                     train.get("perturbation_channels"))),
        "max_abs_pixel_change_255": _number(generate.get("max_abs_pixel_change_255")),
        "psnr_db": _number(generate.get("psnr_db")),
        "ssim": _number(generate.get("ssim")),
        "clean_test_acc": _number(results.get("clean_test_acc")),
        "unlearnable_test_acc": _number(results.get("unlearnable_test_acc")),
        "victim": results.get("victim") if isinstance(results.get("victim"), str) else None,
    }


def _read_shards(shards: ShardSet) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, sample ids) a shard at a time: a large set never sits in memory."""
    for info in shards.shards(SPLIT):
        path = shards.root / info.file
        with reading(path) as f:  # read whole, so the caller's errors are not the shard's
            labels = read_labels(f, path, len(shards.classes), info.num_samples)
            images, index = f["images"][:], f["index"][:]
        yield images, labels, index


# -- how it is written: PNG files, or one npz --

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


@dataclass
class Files:
    """PNG files, one an image, at ``place(id, label)`` under the export's root."""

    place: Callable[[int, int], str]
    names: list[str] | None
    description: str

    def write(self, shards: ShardSet, root: Path) -> tuple[list[Sample], dict[str, str]]:
        samples, files = [], {}
        for images, labels, index in _read_shards(shards):
            for image, label, i in zip(images, labels, index, strict=True):
                rel = self.place(int(i), int(label))
                files[rel] = _write(root / rel, _png(image))
                samples.append(Sample(int(i), rel, None, int(label),
                                      None if self.names is None else self.names[int(i)]))
        if len(files) != len(samples):
            raise ExportError(f"{root}: {len(samples)} images went to {len(files)} files (two "
                              f"names map to one file); nothing was exported")
        return samples, files

    def check(self, shards: ShardSet, root: Path, samples: list[Sample],
              files: dict[str, str]) -> None:
        """Every file read back from disk: its sha256, and its pixels against the shards."""
        at = {s.id: s for s in samples}
        for images, labels, index in _read_shards(shards):
            for image, label, i in zip(images, labels, index, strict=True):
                sample = at[int(i)]
                path = root / sample.file
                data = path.read_bytes()
                if (sample.label != int(label)
                        or hashlib.sha256(data).hexdigest() != files[sample.file]
                        or not np.array_equal(_read_png(path, data), image)):
                    raise _mismatch(path, f"image {int(i)}")


@dataclass
class Npz:
    """One ``.npz`` in MedMNIST's layout: ``train_images`` N x H x W (gray) or N x H x W x 3,
    uint8; ``train_labels`` N x 1 (uint8 up to 256 classes), row r at ``row(id)``."""

    file: str
    row: Callable[[int], int]
    names: list[str] | None
    description: str

    def write(self, shards: ShardSet, root: Path) -> tuple[list[Sample], dict[str, str]]:
        n, shape = shards.size(SPLIT), shards.image_shape
        images = np.empty((n, *shape), np.uint8)
        labels = np.empty((n, 1), np.uint8 if len(shards.classes) <= 256 else np.int64)
        filled = np.zeros(n, bool)
        samples = []
        for shard_images, shard_labels, index in _read_shards(shards):
            rows = np.array([self.row(int(i)) for i in index], np.int64)
            images[rows], labels[rows, 0], filled[rows] = shard_images, shard_labels, True
            samples += [Sample(int(i), self.file, int(r), int(label),
                               None if self.names is None else self.names[int(i)])
                        for i, r, label in zip(index, rows, shard_labels, strict=True)]
        if not filled.all() or len({s.row for s in samples}) != n:
            raise ExportError(f"{root / self.file}: the source rows of the {n} images are not "
                              f"0..{n - 1} once each; nothing was exported")
        gray = is_gray(images)  # MedMNIST's gray sets are N x H x W
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{f"{SPLIT}_images": images[..., 0] if gray else images,
                                       f"{SPLIT}_labels": labels})
        del images
        return samples, {self.file: _write(root / self.file, buffer.getvalue())}

    def check(self, shards: ShardSet, root: Path, samples: list[Sample],
              files: dict[str, str]) -> None:
        path = root / self.file
        if sha256(path) != files[self.file]:
            raise _mismatch(path, "the file")
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz[f"{SPLIT}_images"], npz[f"{SPLIT}_labels"]
        images = gray_to_rgb(images) if images.ndim == 3 else images
        rows = {s.id: s.row for s in samples}
        for shard_images, shard_labels, index in _read_shards(shards):
            at = np.array([rows[int(i)] for i in index], np.int64)
            if (not np.array_equal(images[at], shard_images)
                    or not np.array_equal(labels[at, 0].astype(np.int64), shard_labels)):
                raise _mismatch(path, f"rows {at.min()}..{at.max()}")


Layout = Files | Npz


def _class_folders(classes: list[str]) -> list[str]:
    """A folder name per class: its name, made safe for a path (no ``/``, not ``.``/``..``)."""
    out: list[str] = []
    for i, name in enumerate(classes):
        folder = name.replace("/", "_").replace("\0", "_").strip()
        if folder in ("", ".", "..") or folder in out:
            folder = f"{i:03d}_{folder}".rstrip("_.")
        out.append(folder)
    return out


def _imagefolder(shards: ShardSet, dataset: str, names: list[str] | None) -> Layout:
    folders = _class_folders(shards.classes)
    width = max(5, len(str(shards.size(SPLIT) - 1)))
    return Files(lambda i, label: f"{SPLIT}/{folders[label]}/{i:0{width}d}.png", names,
                 f"`{SPLIT}/<class>/<sample id>.png`: one folder a class, one lossless PNG an "
                 f"image, named by its sample id (0..N-1, the order of the training set)")


def _npz(shards: ShardSet, dataset: str, names: list[str] | None) -> Layout:
    return Npz(NPZ, lambda i: i, names,
               f"`{NPZ}`, MedMNIST's layout: `{SPLIT}_images` (uint8, N x H x W for a gray set, "
               f"else N x H x W x 3) and `{SPLIT}_labels` (N x 1), row i = sample id i; read it "
               f"with `numpy.load`")


def _png_name(name: str) -> str:
    """The source's name, as PNG: kept where it is a PNG already, else its suffix replaced."""
    path = PurePosixPath(name)
    return name if path.suffix.lower() == ".png" else str(path.with_suffix(".png"))


def _same_as_source(shards: ShardSet, dataset: str, names: list[str] | None) -> Layout:
    assert names is not None  # _source_names refused otherwise
    if dataset.startswith(MEDMNIST_PREFIX):
        rows = [NPZ_ROW.fullmatch(name) for name in names]
        bad = [name for name, m in zip(names, rows, strict=True)
               if m is None or m["key"] != f"{SPLIT}_images"]
        files = {m["file"] for m in rows if m is not None}
        if bad or len(files) != 1:
            raise ShardError(f"{shards.root}: source names {bad[:2] or sorted(files)[:2]} are not "
                             f"rows of one {SPLIT}_images array; prepare the data again")
        (file,) = files
        at = [int(m["row"]) for m in rows]  # type: ignore[index]
        return Npz(file, lambda i: at[i], names,
                   f"`{file}`, the source's own file name and MedMNIST's layout: "
                   f"`{SPLIT}_images` (uint8, N x H x W for a gray set, else N x H x W x 3) and "
                   f"`{SPLIT}_labels` (N x 1), each image at its source row")
    pngs = [_png_name(name) for name in names]
    taken = Counter(pngs)
    # a.jpg and a.png side by side in the source: the one that was not a PNG gets a.jpg.png
    out = [png if taken[png] == 1 or name == png else f"{name}.png"
           for name, png in zip(names, pngs, strict=True)]
    if len(set(out)) != len(out):
        twice = sorted(name for name, n in Counter(out).items() if n > 1)
        raise InputError(f"{shards.root}: the source names give {twice[:3]} to two images each "
                         f"as PNG files; export with --format imagefolder")
    return Files(lambda i, label: out[i], names,
                 "the source's own folders and file names, each image a lossless PNG: a PNG "
                 "source file keeps its name, any other gets the suffix `.png` (`a.jpg` -> "
                 "`a.png`); `source` in the manifest maps every file to its original")


_LAYOUTS: dict[str, Callable[[ShardSet, str, list[str] | None], Layout]] = {
    "imagefolder": _imagefolder, "npz": _npz, "same-as-source": _same_as_source,
}


# -- what is said about it: manifest.json, README.md --

def _manifest(fmt: str, shards: ShardSet, dataset: str, method: dict[str, Any],
              samples: list[Sample], files: dict[str, str]) -> dict[str, Any]:
    h, w, _ = shards.image_shape
    return {
        "hpcue_version": __version__,
        "format": fmt,
        "dataset": dataset,
        "split": SPLIT,
        "images": len(samples),
        "image_size": [h, w],
        "classes": shards.classes,
        "method": method,
        "samples": [{"file": s.file, **({"row": s.row} if s.row is not None else {}),
                     "id": s.id, "label": s.label, "class": shards.classes[s.label],
                     "sha256": files[s.file], "source": s.source}
                    for s in sorted(samples, key=lambda s: s.id)],
    }


def _known(value: Any, text: str | None = None) -> str:
    return "not recorded" if value is None else (text or str(value))


def _readme(fmt: str, shards: ShardSet, dataset: str, method: dict[str, Any],
            layout: Layout) -> str:
    eps = method["epsilon"]
    eps_text = _known(eps, f"{method['epsilon_255']:g}/255 ({eps:.6g} on a 0..1 scale)"
                      if eps is not None else None)
    h, w, _ = shards.image_shape
    folders_sorted = _class_folders(shards.classes) == sorted(_class_folders(shards.classes))
    row = "; `row`: its row in the arrays" if isinstance(layout, Npz) else ""
    lines = [
        f"# {dataset}: unlearnable training set",
        "",
        f"The training split of `{dataset}` ({shards.size(SPLIT)} images, {h} x {w} pixels, "
        f"{len(shards.classes)} classes), made *unlearnable* with {METHOD} (UC): every image "
        f"carries a small perturbation, at most {eps_text} per pixel and channel, chosen so "
        f"that a model trained on these images learns little that holds on clean images.",
        "",
        "- **Labels are untouched**: each image keeps its original label and class.",
        "- **Only the training split is here**: it is the only one perturbed. Evaluate on the "
        "original, clean test split.",
        "- Images are stored losslessly (PNG or uint8 arrays): re-encoding them lossily (JPEG) "
        "changes the perturbation.",
        "",
        "## Layout",
        "",
        f"- {layout.description}.",
        f"- `{MANIFEST}`: every image with its `file` (relative path{row}), `id` (sample id), "
        "`label` (integer), `class` (name), `sha256` (of the file written) and `source` (its "
        "name in the original data set, where known); under `method`, how the set was made.",
    ]
    if isinstance(layout, Files) and fmt == "imagefolder":
        lines.append(
            "- torchvision's `ImageFolder` numbers classes in sorted folder order; "
            + ("here that is the label order." if folders_sorted else
               "here that is **not** the label order: take labels from the manifest."))
    lines += [
        "",
        "## How it was made",
        "",
        f"- method: {METHOD}, K = {_known(method['num_clusters'])} clusters, surrogate "
        f"{_known(method['surrogate'])}",
        f"- eps (L-infinity bound): {eps_text}; largest pixel change found: "
        f"{_known(method['max_abs_pixel_change_255'])}/255; PSNR {_known(method['psnr_db'])} dB, "
        f"SSIM {_known(method['ssim'])} against the clean images",
    ]
    clean_acc, ul_acc = method["clean_test_acc"], method["unlearnable_test_acc"]
    if clean_acc is not None and ul_acc is not None:
        lines.append(f"- in the run that made it, a {_known(method['victim'])} trained on this "
                     f"set reached {ul_acc:.1%} clean test accuracy, one trained on the clean "
                     f"set {clean_acc:.1%}")
    lines += [f"- written by hpcue {__version__} (`hpcue export --format {fmt}`)", ""]
    return "\n".join(lines)
