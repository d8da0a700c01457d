"""What is said about an export, for whoever receives the data: ``manifest.json`` (every file,
label, class, sha256 and source name; how the set was made) and ``README.md`` (what the set is,
how it is laid out, how it was made)."""

from __future__ import annotations

from typing import Any

from hpcue import __version__
from hpcue.data.shard_set import ShardSet
from hpcue.export.layouts import Files, Layout, Npz, Sample, class_folders
from hpcue.export.sources import METHOD, SPLIT

MANIFEST = "manifest.json"
README = "README.md"


def manifest(fmt: str, shards: ShardSet, dataset: str, method: dict[str, Any],
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


def readme(fmt: str, shards: ShardSet, dataset: str, method: dict[str, Any],
           layout: Layout) -> str:
    eps = method["epsilon"]
    eps_text = _known(eps, f"{method['epsilon_255']:g}/255 ({eps:.6g} on a 0..1 scale)"
                      if eps is not None else None)
    h, w, _ = shards.image_shape
    folders_sorted = class_folders(shards.classes) == sorted(class_folders(shards.classes))
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
