"""Victim models trained from scratch to measure how learnable a training set is: every
architecture a data thief might train, by name (``VICTIM_ARCHS``), each ending in ``fc``, the
linear classifier whose input is the features (the contrastive learners and Bayes-error
maximisation read them there)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hpcue.errors import InputError


class Headed(nn.Module):
    """A feature extractor ``body`` and a linear ``fc`` on its features."""

    def __init__(self, body: nn.Module, width: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class AtLeast(nn.Module):
    """Images smaller than ``size`` resized up to it first (an architecture that pools five
    times needs 32 px; the digits are 16)."""

    def __init__(self, size: int, body: nn.Module) -> None:
        super().__init__()
        self.size, self.body = size, body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.size:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                          align_corners=False)
        return self.body(x)


def _small_cnn(num_classes: int, image_size: int) -> nn.Module:
    from hpcue.models.small_cnn import SmallCNN

    return SmallCNN(num_classes)


def _resnet18(num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


def _resnet18_small(num_classes: int, image_size: int) -> nn.Module:
    """ResNet-18 in its small-image (CIFAR) form: a 3x3 stride-1 stem and no max pool."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _vgg(config: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, image_size: int) -> nn.Module:
        """VGG with batch norm in its small-image form: torchvision's convolutions, then a
        global average pool and one linear layer (not the 224-px form's 4096-wide head)."""
        from torchvision.models.vgg import cfgs, make_layers

        body = nn.Sequential(make_layers(cfgs[config], batch_norm=True),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return Headed(AtLeast(32, body), 512, num_classes)
    return build


def _vit_tiny(num_classes: int, image_size: int) -> nn.Module:
    """timm's ViT-Tiny (width 192, depth 12, 3 heads) at the data's size, in 8 x 8 patches
    (at least 2 px each)."""
    from timm.models.vision_transformer import VisionTransformer

    body = VisionTransformer(img_size=image_size, patch_size=max(2, image_size // 8),
                             embed_dim=192, depth=12, num_heads=3, num_classes=0)
    return Headed(body, 192, num_classes)


#: every victim architecture by name
VICTIM_ARCHS: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": _small_cnn, "resnet18": _resnet18, "resnet18_small": _resnet18_small,
    "vgg11_bn": _vgg("A"), "vgg16_bn": _vgg("D"), "vit_tiny": _vit_tiny,
}


def build_victim(arch: str, num_classes: int, image_size: int = 32) -> nn.Module:
    if arch not in VICTIM_ARCHS:
        raise InputError(f"unknown victim arch {arch!r}: expected one of "
                         f"{', '.join(VICTIM_ARCHS)}")
    return VICTIM_ARCHS[arch](num_classes, image_size)


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
