"""Self-supervised pretraining by contrasting two views of each image (SimCLR, Chen et al., 2020).

Like rotation prediction it never reads the labels (UC's label-agnostic threat model); it learns
features that stay put under shifts and intensity changes and tell images apart, which is what
K-means needs. The model's ``fc`` is the (linear) projection head; the features the surrogate
hands K-means are its input.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss

from hpcue.training.batches import augment_batch
from hpcue.training.classifier import Classifier

#: the projection's width (the small CNN's ``fc`` outputs)
PROJECTION_DIM = 64


def view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view: two random crops (a shift of up to 1/4 of the side), intensity scaled and
    offset, a little Gaussian noise; [0, 1] in and out."""
    x = augment_batch(augment_batch(x, "crop", generator), "crop", generator)
    shape = (len(x), 1, 1, 1)
    scale = torch.empty(shape, device=x.device).uniform_(0.6, 1.4, generator=generator)
    offset = torch.empty(shape, device=x.device).uniform_(-0.2, 0.2, generator=generator)
    noise = torch.randn(x.shape, device=x.device, generator=generator) * 0.05
    return (x * scale + offset + noise).clamp(0, 1)


class SimCLRPretext(Classifier):
    """A Classifier trained on two views of each image: the data's labels are never read.

    Views are drawn from (seed, epoch, step, rank), so a resumed run draws the same ones.
    """

    temperature = 0.5

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _labels, _ = batch
        gen = self.step_generator(images.device, batch_idx, salt=2)
        # one forward over both views (batch norm sees 2B images); lightly's NT-Xent: each
        # view's twin the positive, every other view a negative
        z = self(torch.cat([view(images, gen), view(images, gen)]))
        loss = NTXentLoss(self.temperature)(*z.chunk(2))
        self.log("contrastive_loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(images))
        return loss
