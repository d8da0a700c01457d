"""Self-supervised pretraining by rotation prediction (Gidaris et al., ICLR 2018).

UC's threat model is label-agnostic: its surrogate never saw the protected set's labels. A
debugging surrogate trained on those labels clusters by class and turns UC into class-wise
noise. Predicting which of four rotations an image shows needs no labels and still learns
shape features that K-means can group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpcue.training.classifier import Classifier

NUM_ROTATIONS = 4


def rotate_each(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Image i turned by targets[i] quarter turns."""
    out = torch.empty_like(images)
    for k in range(NUM_ROTATIONS):
        mine = targets == k
        out[mine] = torch.rot90(images[mine], k, dims=(2, 3))
    return out


class RotationPretext(Classifier):
    """A Classifier whose targets are rotations: the data's labels are never read.

    Each image is shown at one rotation a step, drawn like the augmentation from (seed, epoch,
    step, rank): the cost of a supervised epoch, and a resumed run draws the same rotations.
    """

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _labels, _ = batch
        images = self.augmented(images, batch_idx)
        gen = self.step_generator(images.device, batch_idx, salt=1)
        targets = torch.randint(NUM_ROTATIONS, (len(images),), generator=gen,
                                device=images.device)
        loss = F.cross_entropy(self(rotate_each(images, targets)), targets)
        self.log("rotation_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(images))
        return loss
