"""``hpcue export``: a run's unlearnable set, out of the shards, in a form others read.

A protected set is made to be published; inside a run directory it exists only as HDF5 shards.
``export_run`` writes it as plain files: PNG class folders (``imagefolder``), MedMNIST's ``.npz``
layout (``npz``), or the raw data set's own layout and names (``same-as-source``), always with
``manifest.json`` (every file, label, class, sha256; the eps, K and surrogate that made it) and a
``README.md`` for whoever receives it.

Every image the user gave is published: the training split as the run perturbed it, and the
test split (which the run kept clean to measure the protection with) protected the way UC
protects an image it did not train on, each with the perturbation of its nearest cluster center
(``protect``). ``train_only`` (``--train-only``) exports the training split alone, as hpcue did
before; a data set without a test split exports its training split. Every pixel is written
losslessly and read back bit for bit before anything is handed over: the export is built in a
temporary sibling folder and renamed into place at the end, so a failure of any kind leaves
nothing. An existing, non-empty ``out`` is never touched. A set whose run found it "not
protected" (results.json's verdict) is refused unless asked for (``even_if_unprotected``);
every README opens with the run's verdict.

The package, a module a concern: ``sources`` (what is read from the run), ``protect`` (the test
split's perturbations), ``layouts`` (how each format is written and read back), ``receivers``
(manifest.json and README.md); this module checks ``out``, holds the run's lock and puts the
finished export into place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from hpcue import console
from hpcue.data.shard_set import ShardSet
from hpcue.data.verify import verify
from hpcue.errors import InputError, MissingInputError
from hpcue.export.layouts import LAYOUTS, NPZ, ExportError, Part
from hpcue.export.receivers import MANIFEST, README, manifest, protection, readme, warns
from hpcue.export.sources import (
    SPLIT,
    TEST,
    clean_set,
    method_of,
    read_shards,
    source_names,
    unlearnable,
    verdict_of,
)
from hpcue.io import atomic_write_json, atomic_write_text, exclusive
from hpcue.stages.rundir import RunDir

__all__ = ["FORMATS", "MANIFEST", "NPZ", "README", "ExportError", "export_run"]

FORMATS = ("imagefolder", "npz", "same-as-source")


def export_run(run_dir: Path, fmt: str, out: Path, even_if_unprotected: bool = False,
               train_only: bool = False) -> dict[str, Any]:
    """Write ``run_dir``'s unlearnable set to the new folder ``out`` as ``fmt``: the training
    split and, unless ``train_only`` or the clean set has none, the test split protected.

    Returns ``{"format", "out", "images", "classes"}``. Bad input (no run directory, no
    unlearnable set, damaged shards, an unknown format, an ``out`` that holds something) is
    one HpcueError before anything is written. So is a run whose verdict is "not protected",
    unless ``even_if_unprotected``: a set its own run found unprotected is not published by
    default. Anything short of "protected" is exported with a warning on the terminal; the
    README opens with the verdict either way.
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
        verdict = verdict_of(run)
        if verdict is not None and verdict["level"] == "not protected" and not even_if_unprotected:
            raise InputError(f"{run.root}: its run found no protection (verdict: not protected, "
                             f"in {run.results}); nothing was exported: pass "
                             f"--even-if-unprotected to export it anyway (its README then "
                             f"says so first)")
        shards = unlearnable(run)
        dataset = shards.meta["dataset"].removesuffix("+uc")
        names = source_names(run, shards, dataset, required=fmt == "same-as-source")
        parts = [Part(SPLIT, lambda: read_shards(shards), shards.size(SPLIT), names)]
        if not train_only:
            parts += _test_part(run, shards, dataset, names is not None)
        method = method_of(run)
        layout = LAYOUTS[fmt](shards, dataset, parts)
        parent = out.absolute().parent
        made = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
        tmp = parent / f"{out.absolute().name}.partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            samples, files = layout.write(parts, tmp)
            layout.check(parts, tmp, samples, files)
            atomic_write_json(tmp / MANIFEST, manifest(fmt, shards, dataset, method, verdict,
                                                       parts, samples, files))
            atomic_write_text(tmp / README, readme(fmt, shards, dataset, method, verdict, layout,
                                                   parts, train_only))
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
    if warns(verdict):  # the set is out: whoever publishes it reads this last
        console.warn(protection(verdict))
    return {"format": fmt, "out": str(out), "images": len(samples),
            "classes": len(shards.classes)}


def _test_part(run: RunDir, shards: ShardSet, dataset: str, named: bool) -> list[Part]:
    """The clean test split, protected (nearest cluster center), as a part of the export;
    none where the clean set has no test split. A clean set that cannot be found is an error:
    exporting the training split alone would silently leave the test images out."""
    from hpcue.export.protect import protect_test  # torch and the surrogate: only when needed

    clean = clean_set(run, shards, dataset)
    if clean is None:
        raise MissingInputError(
            f"{run.root}: the clean data set the unlearnable one was made from, whose test "
            f"split an export protects and publishes too, is not found "
            f"({shards.meta.get('source')}, nor {run.data}): export from where the run was "
            f"made, or pass --train-only to export the training split alone")
    if TEST not in clean.splits:
        return []
    verify(clean.root)  # its checksums, as the unlearnable set's, before anything is read
    test = protect_test(run, clean, shards.image_shape)
    clusters = test.clusters.tolist()
    return [Part(TEST, test.read, test.size, clean.source_names(TEST) if named else None,
                 lambda i: clusters[i])]


def _check_out(out: Path) -> None:
    if out.is_file() or out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out} exists and is not a plain folder: export into a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: export into a new or empty folder "
                         f"(nothing in it was changed)")

