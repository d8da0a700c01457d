"""Victim models trained from scratch to measure how learnable a training set is."""

from __future__ import annotations

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
