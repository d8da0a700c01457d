"""Cheap defenses a data user may apply before training (as APBench evaluates every attack).

Each maps a uint8 N x 3 x H x W batch of training images to another one, deterministically, so
applying it per batch equals applying it once to the whole set. The evaluation reports the
worst case over them: protection only counts if it survives the cheapest countermeasures.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch

Defense = Callable[[torch.Tensor], torch.Tensor]

JPEG_QUALITY = 75
# ITU-R BT.601 luma, as PIL's convert("L")
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def none(images: torch.Tensor) -> torch.Tensor:
    return images


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma, copied to all three channels: a shortcut living in colour is gone."""
    luma = (images.float() * _LUMA.to(images.device)).sum(1, keepdim=True)
    return luma.round().clamp(0, 255).to(torch.uint8).expand_as(images).contiguous()


def jpeg(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
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


DEFENSES: dict[str, Defense] = {"none": none, "grayscale": grayscale, "jpeg": jpeg}
