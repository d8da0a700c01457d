"""What is said about an export, for whoever receives the data: ``manifest.json`` (every file,
label, class, sha256 and source name; how the set was made; the run's verdict) and ``README.md``
(whether the run that made it found it protected, what the set is, how it is laid out, how it
was made).

The README claims no more than the run measured: its first lines are the run's verdict
(``evaluation/verdict.py``, recorded in results.json) and the figures behind it; a run without
one says that no verdict was recorded.
"""

from __future__ import annotations

from typing import Any

from hpcue import __version__
from hpcue.data.shard_set import ShardSet
from hpcue.evaluation.verdict import MARGIN
from hpcue.export.layouts import Files, Layout, Npz, Part, Sample, class_folders
from hpcue.export.sources import KMEANS, METHOD, NEAREST, SPLIT, TEST

MANIFEST = "manifest.json"
README = "README.md"

_MARGIN = f"{100 * MARGIN:.0f} points"
#: what the README's first lines (and, but for "protected", a warning on the terminal) say
#: about each verdict level; None: no verdict recorded
PROTECTION: dict[str | None, str] = {
    "protected": f"The run that made this set found it protected: a model trained on it scored "
                 f"at least {_MARGIN} below one trained on random noise of the same strength, "
                 f"and surely below (95% interval above zero).",
    "weak": f"The run that made this set found it only weakly protected: a model trained on it "
            f"scored surely below one trained on random noise of the same strength, but by "
            f"less than {_MARGIN}.",
    "uncertain": "The run that made this set could not tell whether it is protected: the 95% "
                 "interval of its margin over random noise of the same strength reaches from "
                 f"zero or below to {_MARGIN} or more.",
    "not protected": "The run that made this set found NO protection: a model learns from these "
                     "images about as well as from images with random noise of the same "
                     f"strength (within {_MARGIN}, surely). Do not count on them being "
                     "unlearnable.",
    "undecided": "The run that made this set reached no verdict (it needs the random-noise "
                 "baseline and at least two victim seeds): nothing shows that it is protected.",
    None: "No verdict was recorded for the run that made this set (its results.json holds "
          "none: the run did not finish, or an older hpcue wrote it): nothing shows that it is "
          "protected.",
}


def protection(verdict: dict[str, Any] | None) -> str:
    """The one statement about the set's protection that the README opens with."""
    return PROTECTION[None if verdict is None else verdict["level"]]


def warns(verdict: dict[str, Any] | None) -> bool:
    """Whether the export warns: anything short of a recorded ``protected``."""
    return verdict is None or verdict["level"] != "protected"


def manifest(fmt: str, shards: ShardSet, dataset: str, method: dict[str, Any],
             verdict: dict[str, Any] | None, parts: list[Part], samples: list[Sample],
             files: dict[str, str]) -> dict[str, Any]:
    h, w, _ = shards.image_shape
    order = {p.split: n for n, p in enumerate(parts)}
    return {
        "hpcue_version": __version__,
        "format": fmt,
        "dataset": dataset,
        "split": "+".join(p.split for p in parts),
        "splits": {p.split: p.size for p in parts},
        "images": len(samples),
        "image_size": [h, w],
        "classes": shards.classes,
        "method": method,
        "verdict": verdict,  # the run's, as results.json records it; None: none recorded
        # each sample's split and how its cluster (its perturbation) was chosen: a training
        # image's by K-means, a test image's as its nearest center (UC on an unseen image)
        "samples": [{"file": s.file, **({"row": s.row} if s.row is not None else {}),
                     "split": s.split, "id": s.id, "label": s.label,
                     "class": shards.classes[s.label], "sha256": files[s.file],
                     "source": s.source,
                     "cluster_assigned_by": NEAREST if s.split == TEST else KMEANS,
                     **({"cluster": s.cluster} if s.cluster is not None else {})}
                    for s in sorted(samples, key=lambda s: (order[s.split], s.id))],
    }


def _known(value: Any, text: str | None = None) -> str:
    return "not recorded" if value is None else (text or str(value))


def _which_splits(parts: list[Part], train_only: bool) -> str:
    """What the README says about the splits: which were exported, and how each was protected."""
    if len(parts) > 1:
        return (f"- **The test split is here too, protected**: the run kept it clean to measure "
                f"the protection with; it is published protected, so that every image given is "
                f"(`{TEST}` beside `{SPLIT}`). A training image carries the perturbation of its "
                f"cluster, found by K-means; a test image, which the run did not cluster, that "
                f"of its nearest cluster center in the surrogate's feature space, as UC protects "
                f"an image it did not train on (`cluster_assigned_by` in `{MANIFEST}`).")
    why = ("exported with `--train-only`; the run's clean test split is not published" if
           train_only else "the data set has no test split")
    return (f"- **Only the training split is here** ({why}). Evaluate on the original, clean "
            f"test split.")


def readme(fmt: str, shards: ShardSet, dataset: str, method: dict[str, Any],
           verdict: dict[str, Any] | None, layout: Layout, parts: list[Part],
           train_only: bool) -> str:
    eps = method["epsilon"]
    eps_text = _known(eps, f"{method['epsilon_255']:g}/255 ({eps:.6g} on a 0..1 scale)"
                      if eps is not None else None)
    h, w, _ = shards.image_shape
    folders_sorted = class_folders(shards.classes) == sorted(class_folders(shards.classes))
    row = "; `row`: its row in the arrays" if isinstance(layout, Npz) else ""
    statement = protection(verdict)
    lines = [
        f"# {dataset}: {'training and test sets' if len(parts) > 1 else 'training set'} "
        f"perturbed with {METHOD}",
        "",
        f"**{'Warning: ' if warns(verdict) else ''}{statement}**",
        "",
    ]
    if verdict is not None:  # the verdict's own words: its figures and their 95% intervals
        lines += ["The run's verdict, as its `results.json` records it:", "",
                  *(f"> {line}" for line in verdict["text"]), ""]
    lines += [
        f"The {' and '.join(f'{p.split} ({p.size} images)' for p in parts)} split"
        f"{'s' * (len(parts) > 1)} of `{dataset}` ({h} x {w} pixels, "
        f"{len(shards.classes)} classes), perturbed with {METHOD} (UC) to make it "
        f"*unlearnable*: every image carries a small perturbation, at most {eps_text} per pixel "
        f"and channel, meant to leave a model trained on these images little that holds on "
        f"clean images. Whether it does is what the run measured (above), not a promise.",
        "",
        "- **Labels are untouched**: each image keeps its original label and class.",
        _which_splits(parts, train_only),
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
