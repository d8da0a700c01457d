"""What an export reads: the run's unlearnable set, the clean set it was made from (for each
sample's name in the raw data set), and how it was made (results.json, the stage records).

Everything here only reads; every refusal (no unlearnable set, no source names where
``same-as-source`` needs them) comes before the export writes anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpcue.data.meta_io import META
from hpcue.data.shard_set import ShardSet, open_shards
from hpcue.data.shards import ShardError, read_labels, reading
from hpcue.data.verify import verify
from hpcue.errors import InputError, MissingInputError
from hpcue.evaluation.verdict import LEVELS
from hpcue.io import read_json
from hpcue.stages.rundir import RunDir, StageInputError

SPLIT = "train"  # the split a run perturbs (its clusters come from K-means)
TEST = "test"    # the split a run measures with, clean; an export protects it too (protect.py)
METHOD = "unlearnable clusters"
#: how an image's cluster (its perturbation) was chosen, as the manifest says it: a training
#: image's by the run's K-means, a test image's as its nearest center (protect.py)
KMEANS, NEAREST = "k-means", "nearest center"
#: the data sets that have no source files to be named after (scikit-learn's embedded digits)
NO_FILES = ("digits",)


def unlearnable(run: RunDir) -> ShardSet:
    """The run's unlearnable set, verified (checksums, shapes, labels) before it is read."""
    if not (run.unlearnable / META).is_file():
        raise StageInputError(f"{run.root}: no unlearnable set ({run.unlearnable / META} not "
                              f"found): run `hpcue generate --out {run.root}` first (or `hpcue "
                              f"run` for the whole pipeline)")
    verify(run.unlearnable)
    return open_shards(run.unlearnable)


def clean_set(run: RunDir, shards: ShardSet, dataset: str) -> ShardSet | None:
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


def source_names(run: RunDir, shards: ShardSet, dataset: str,
                 required: bool) -> list[str] | None:
    """Each training sample's name in the raw data set, by sample id; None when unknown.

    ``required`` (same-as-source): unknown names are an error saying what to do instead.
    """
    if required and dataset in NO_FILES:
        raise InputError(f"{run.root}: {dataset} has no source files to keep the names of (it "
                         f"is scikit-learn's embedded data): export with --format imagefolder "
                         f"or --format npz")
    try:
        clean = clean_set(run, shards, dataset)
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


def method_of(run: RunDir) -> dict[str, Any]:
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


def verdict_of(run: RunDir) -> dict[str, Any] | None:
    """The run's verdict, ``{"level", "text"}``, as results.json records it; None where it
    records none (the run did not finish, or an older hpcue wrote it) or not one hpcue writes:
    what the README says then is that no verdict was recorded, never a protection."""
    found = read_json(run.results).get("verdict") if run.finished else None
    if (not isinstance(found, dict) or found.get("level") not in LEVELS
            or not isinstance(found.get("text"), list)
            or not all(isinstance(line, str) for line in found["text"])):
        return None
    return {"level": found["level"], "text": found["text"]}


def read_shards(shards: ShardSet, split: str = SPLIT,
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, sample ids) a shard at a time: a large set never sits in memory."""
    for info in shards.shards(split):
        path = shards.root / info.file
        with reading(path) as f:  # read whole, so the caller's errors are not the shard's
            labels = read_labels(f, path, len(shards.classes), info.num_samples)
            images, index = f["images"][:], f["index"][:]
        yield images, labels, index
