"""Victim models trained from scratch to measure how learnable a training set is."""

from __future__ import annotations

import torch
from torch import nn

from hpcue.errors import InputError


def build_victim(arch: str, num_classes: int) -> nn.Module:
    if arch == "small_cnn":
        from hpcue.models.small_cnn import SmallCNN

        return SmallCNN(num_classes)
    if arch == "resnet18":
        from torchvision.models import resnet18

        return resnet18(weights=None, num_classes=num_classes)
    raise InputError(f"unknown victim arch {arch!r}: expected small_cnn or resnet18")


def penultimate(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input of ``model.fc`` (the features its classifier reads) for ``images``: every
    victim here ends in ``fc``; the forward runs whole, its logits unused."""
    seen: list[torch.Tensor] = []
    hook = model.fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        model(images)
    finally:
        hook.remove()
    return seen[0]
