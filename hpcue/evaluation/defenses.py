"""The countermeasures a data user may try, each evaluated as an arm beside UC (as APBench and
ISS evaluate every attack): the worst case over them is what a protection is worth.

Two kinds:

- **data** defenses map the uint8 N x 3 x H x W training images to other ones,
  deterministically, so applying them per batch equals applying them once to the whole set:
  grayscale, JPEG re-encoding, bit-depth reduction.
- **training** defenses change how the victim trains on them: Cutout, MixUp, CutMix, and PGD
  adversarial training (hpcue/evaluation/training_defenses.py).

Every defense's parameters, and whose values they are, go into results.json.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

DataDefense = Callable[[torch.Tensor], torch.Tensor]

APBENCH = "APBench (lafeat/apbench: util.py aug_train, train.py, mardrys.py)"
# ITU-R BT.601 luma, as PIL's convert("L")
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma, copied to all three channels: a shortcut living in colour is gone."""
    luma = (images.float() * _LUMA.to(images.device)).sum(1, keepdim=True)
    return luma.round().clamp(0, 255).to(torch.uint8).expand_as(images).contiguous()


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encoded as JPEG at ``quality`` (PIL, 4:2:0 chroma) and decoded: high-frequency
    patterns are smoothed."""
    from PIL import Image

    out = []
    for image in images.permute(0, 2, 3, 1).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


def bit_depth(images: torch.Tensor, bits: int) -> torch.Tensor:
    """Each channel kept to its ``bits`` highest bits (torchvision's posterize): a change of a
    few levels mostly falls inside one step."""
    from torchvision.transforms.v2.functional import posterize

    return posterize(images, bits)


@dataclass(frozen=True)
class Defense:
    """One countermeasure: its kind, its parameters and whose values they are."""

    name: str
    kind: Literal["data", "training"]
    params: dict[str, Any] = field(default_factory=dict)
    source: str = APBENCH
    what: str = ""

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "source": self.source,
                "what": self.what}

    def data_transform(self) -> DataDefense:
        """The uint8 -> uint8 map of a data defense."""
        if self.name == "grayscale":
            return grayscale
        if self.name.startswith("jpeg"):
            return lambda images: jpeg(images, self.params["quality"])
        if self.name == "bitdepth":
            return lambda images: bit_depth(images, self.params["bits"])
        raise ValueError(f"{self.name} is a {self.kind} defense, not a data transform")


DEFENSES: dict[str, Defense] = {d.name: d for d in (
    Defense("grayscale", "data", {"luma": "ITU-R BT.601"}, what="grayscale (luma in every "
            "channel)"),
    Defense("jpeg", "data", {"quality": 75}, source="hpcue's earlier default (quality 75)",
            what="JPEG at quality 75"),
    Defense("jpeg10", "data", {"quality": 10}, source=f"ISS (Liu et al., ICML 2023) and "
            f"{APBENCH}", what="JPEG at quality 10"),
    Defense("bitdepth", "data", {"bits": 2}, source=f"{APBENCH}: RandomPosterize(bits=2)",
            what="bit-depth reduction to 2 bits a channel"),
    Defense("cutout", "training", {"length_fraction": 0.5},
            source=f"{APBENCH}: Cutout(16) at 32 px, a square of half the image side",
            what="Cutout while training"),
    Defense("mixup", "training", {"alpha": 1.0},
            source="torchvision.transforms.v2.MixUp, alpha 1 (lambda uniform in [0, 1], as "
                   "kornia's RandomMixUpV2 that APBench uses)", what="MixUp while training"),
    Defense("cutmix", "training", {"alpha": 1.0},
            source="torchvision.transforms.v2.CutMix, alpha 1 (APBench: kornia's "
                   "RandomCutMixV2, defaults)", what="CutMix while training"),
    Defense("adversarial", "training",
            {"epsilon": 8 / 255, "step_size": 0.007, "steps": 10, "norm": "Linf"},
            source=f"{APBENCH}: MadrysLoss defaults (Madry et al., ICLR 2018)",
            what="PGD adversarial training"),
)}
#: what the config accepts in victim.defenses
DEFENSE_NAMES = tuple(DEFENSES)
