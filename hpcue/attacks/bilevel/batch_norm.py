"""Batch norm over the global batch on any backend (torch's SyncBatchNorm runs on GPUs only):
the crafting model's statistics are the ones one process would compute, so 1 process and W
ranks craft the same noise up to float order."""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
from torch import nn

from hpcue.distributed import collectives


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics sum over every rank's share of the batch, through
    a differentiable all-reduce (a rank's backward reaches every rank's inputs; summing the
    model's gradients over ranks then gives one process's gradient). Eval: running stats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and collectives.active()):
            return super().forward(x)
        c = x.shape[1]
        local = torch.cat([x.sum((0, 2, 3)), x.pow(2).sum((0, 2, 3)),
                           x.new_full((1,), float(x.numel() // max(c, 1)))])
        total = dist_fn.all_reduce(local)
        n = total[-1].clamp_min(1.0)
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean.pow(2)).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
                self.num_batches_tracked.add_(1)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def global_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm2d made a ``GlobalBatchNorm`` in place: the same parameter
    and buffer objects (an optimizer built already keeps stepping them)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm
    return model
