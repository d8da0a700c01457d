"""What every hpcue LightningModule does to a batch: uint8 to [0, 1] on the device, and
augmentation drawn from (seed, epoch, step, rank) so that a resumed run sees the same draws."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hpcue.data.tensors import to_unit


def seeded_generator(key: list[int], device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded from a list of integers (via SeedSequence)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    return gen


class UnitBatches:
    """LightningModule mixin: convert each (uint8 images, labels, ids) batch on the device.

    ``augmented`` draws a batch's random crops and flips from (seed, epoch, step, rank), not
    from the global RNG, so a run resumed from an epoch checkpoint sees the same augmentation
    as an uninterrupted one.
    """

    augment: str = "none"
    augment_seed: int = 0

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, index = batch
        return to_unit(images), labels, index

    def step_generator(self, device: torch.device, batch_idx: int,
                       salt: int = 0) -> torch.Generator:
        """A generator seeded from (seed, epoch, step, rank[, salt]) for this step's draws."""
        key = [self.augment_seed, self.current_epoch, batch_idx, self.global_rank]
        return seeded_generator(key + ([salt] if salt else []), device)

    def augmented(self, images: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.augment == "none":
            return images
        return augment_batch(images, self.augment,
                             self.step_generator(images.device, batch_idx))


def augment_batch(x: torch.Tensor, mode: str,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``crop``: reflect-pad by 1/8, random crop back, per sample; ``crop_flip`` adds a random
    horizontal flip.

    Done on the batch (on the device) so loaders stay trivial and the UC perturbation is added
    after augmentation, as in the paper.
    """
    if mode == "none":
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    if mode == "crop":
        return out
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    # where, not a boolean index: the same pixels without waiting on the device for a count
    return torch.where(flip[:, None, None, None], out.flip(-1), out)

