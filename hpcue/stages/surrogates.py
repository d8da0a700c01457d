"""Where a run's surrogate comes from, and what it saw: shipped, pretrained here, or given.

UC's threat model is label-agnostic: the surrogate never sees the protected set's labels. Its
features come from other data (ImageNet, CLIP's image-text pairs, MNIST for the embedded
digits) or from the protected images without labels. ``origin`` says which, for results.json,
so no figure is read without knowing what the surrogate knew.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from hpcue import console
from hpcue.data.loader import ShardDataset, make_loader
from hpcue.distributed import collectives
from hpcue.io import atomic_write, file_sha256
from hpcue.models.shipped import SHIPPED, shipped_weights, weights_record
from hpcue.models.small_cnn import SmallCNN
from hpcue.models.surrogate import cached_weights_path, require_weights
from hpcue.stages.artifacts import write_surrogate
from hpcue.stages.context import StageContext
from hpcue.training.classifier import Classifier
from hpcue.training.rotation import NUM_ROTATIONS, RotationPretext
from hpcue.training.simclr import PROJECTION_DIM, SimCLRPretext

#: what each pretraining saw, for the origin record
_ORIGINS = {
    "imagenet": ("ImageNet-1k (torchvision's IMAGENET1K_V1 weights)", "ImageNet's labels",
                 False),
    "clip": ("OpenAI CLIP's image-text pairs (open-clip-torch's 'openai' weights)",
             "none (captions, contrastively)", False),
    "self_supervised": ("the protected training images themselves", "none", False),
    "supervised_on_target_labels": ("the protected training images",
                                    "the protected set's own labels", True),
}


def surrogate_pretraining(ctx: StageContext) -> str:
    """Where the surrogate's features come from, as results.json reports it."""
    s = ctx.cfg.surrogate
    if s.arch.startswith("clip_"):
        return "clip"
    if s.arch != "small_cnn":
        return "imagenet"
    return "given_weights" if s.weights is not None else s.pretraining


def _stock(arch: str, weights: Path | None, sha256: str) -> bool:
    """Whether a ResNet's or CLIP tower's file is the library's own published one: the cache
    (no file given), or a torchvision file whose sha256 starts with the hash in its name."""
    if weights is None:
        return True
    if arch.startswith("resnet"):
        return sha256.startswith(cached_weights_path(arch).stem.rsplit("-", 1)[-1])
    return False


def _from_record(path: Path, sha256: str) -> dict:
    """What a weights file's own record (``<file>.json``) says it saw; unknown without one, or
    with a record of another file (its sha256 differs)."""
    record = weights_record(path) or {}
    if record.get("sha256") not in (None, sha256):
        return {"trained_on": f"unknown: {path.with_suffix('.json')} is the record of another "
                              f"file", "labels_used": "unknown", "saw_protected_labels": None}
    return {"trained_on": record.get("data", "unknown: a weights file without a record"),
            "labels_used": record.get("labels_used", "unknown"),
            "saw_protected_labels": record.get("saw_protected_labels"),
            "held_out_accuracy": record.get("held_out_accuracy")}


def origin(ctx: StageContext) -> dict:
    """What the surrogate was trained on, which labels it used, whether it saw the protected
    set's labels (None: unknown, a given file without a record) and its weights' sha256."""
    kind, s = surrogate_pretraining(ctx), ctx.cfg.surrogate
    if s.arch != "small_cnn":
        path = require_weights(s.arch, s.weights)
    else:  # a given file, or the one the cluster stage put into the run
        path = Path(s.weights) if s.weights is not None else ctx.run.surrogate
    sha256 = file_sha256(path)
    if kind in ("imagenet", "clip") and not _stock(s.arch, s.weights, sha256):
        kind = "given_weights"  # a file of the architecture's, trained on who knows what
    out = {"pretraining": kind, "weights_sha256": sha256}
    if kind in _ORIGINS:
        trained_on, labels, saw = _ORIGINS[kind]
        if kind == "self_supervised":
            trained_on += f" ({s.pretext}, without labels)"
        return out | {"trained_on": trained_on, "labels_used": labels,
                      "saw_protected_labels": saw}
    return out | _from_record(SHIPPED[kind].path if kind in SHIPPED else path, sha256)


def install_shipped(ctx: StageContext) -> None:
    """Rank 0 copies the shipped weights (checked against their sha256) into the run, where
    every later stage reads the surrogate from."""
    name = ctx.cfg.surrogate.pretraining
    if ctx.cfg.data.dataset != "digits" and collectives.is_main():
        console.say(f"note: the surrogate is the small CNN trained on MNIST digits "
                    f"(surrogate.pretraining={name}); for images that are not digits set "
                    f"surrogate.pretraining=self_supervised, or an ImageNet or CLIP surrogate")

    def copy() -> None:
        source = shipped_weights(name)
        atomic_write(ctx.run.surrogate, lambda tmp: shutil.copyfile(source, tmp))

    collectives.on_main(copy, "installing the shipped surrogate")


def pretrain_small_surrogate(ctx: StageContext) -> None:
    """Train the small CNN on the training images for a few epochs, by default without their
    labels (rotation prediction).

    Rank 0 trains it alone (seconds on a CPU) and the others wait: the surrogate, and so the
    clusters, are then the same for any world size.
    """
    cfg, data = ctx.cfg, ctx.data
    supervised = cfg.surrogate.pretraining == "supervised_on_target_labels"

    def pretrain() -> None:
        torch.manual_seed(cfg.cluster_seed)  # the surrogate's initial weights
        if supervised:
            kind, outputs = Classifier, len(data.classes)
        elif cfg.surrogate.pretext == "simclr":
            kind, outputs = SimCLRPretext, PROJECTION_DIM
        else:
            kind, outputs = RotationPretext, NUM_ROTATIONS
        model = kind(SmallCNN(outputs), lr=cfg.surrogate.pretrain_lr, momentum=0.9,
                     weight_decay=5e-4, augment=ctx.augment, seed=cfg.cluster_seed)
        trainer = ctx.trainer("surrogate", cfg.surrogate.pretrain_epochs, this_rank_only=True,
                              label=f"surrogate ({cfg.surrogate.pretext} pretraining)")
        trainer.fit(model, make_loader(ShardDataset(data, "train", cache=cfg.data.cache),
                                       cfg.surrogate.pretrain_batch_size, shuffle=True,
                                       seed=cfg.cluster_seed, num_workers=cfg.data.num_workers))
        write_surrogate(ctx.run, model.model)

    collectives.on_main(pretrain, "pretraining the small surrogate")


def provide(ctx: StageContext) -> None:
    """The small CNN's weights into the run directory, when the config asks for them there."""
    s = ctx.cfg.surrogate
    if s.arch != "small_cnn" or s.weights is not None:
        return
    if s.pretraining in SHIPPED:
        install_shipped(ctx)
    else:
        pretrain_small_surrogate(ctx)
