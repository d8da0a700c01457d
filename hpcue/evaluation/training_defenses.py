"""Defenses applied while the victim trains: Cutout, MixUp, CutMix, PGD adversarial training.

Each takes a step's augmented [0, 1] images, their labels, the victim and a seeded generator,
and returns what the victim trains on: images and targets (class indices, or class
probabilities for the mixing ones, which cross-entropy takes as they are). Their randomness
comes from the generator, so a resumed training and every seed's twin arms draw the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hpcue.evaluation.defenses import Defense

#: (images, labels, model, generator) -> (images, targets)
TrainingDefense = Callable[[torch.Tensor, torch.Tensor, nn.Module, torch.Generator],
                           tuple[torch.Tensor, torch.Tensor]]


def cutout(x: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """DeVries & Taylor's Cutout: per image, a ``length`` square zeroed around a centre drawn
    anywhere in the image (clipped at the borders)."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= cy - length // 2) & (rows < cy + length // 2)
              & (cols >= cx - length // 2) & (cols < cx + length // 2))
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _mixing(kind: str, alpha: float, num_classes: int) -> TrainingDefense:
    """torchvision's MixUp or CutMix, its draws taken from ``gen`` (it draws from torch's
    global generator: forked, seeded from ``gen``, so the global stream is left as it was)."""
    from torchvision.transforms import v2

    mix = (v2.MixUp if kind == "mixup" else v2.CutMix)(alpha=alpha, num_classes=num_classes)

    def apply(x, labels, model, gen):
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the CPU generator
            torch.default_generator.manual_seed(seed)
            return mix(x, labels)

    return apply


def pgd(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, epsilon: float,
        step_size: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """L-inf PGD on the victim's own loss (Madry et al.): a random start, ``steps`` signed
    gradient steps, projected to the eps ball and [0, 1]. The victim attacks in eval mode
    (its batch-norm statistics are not moved by the attack) and in fp32, and trains on the
    result."""
    was_training = model.training
    model.eval()
    # in fp32: under 16-mixed the input gradients of a victim that fits its data underflow,
    # and their sign is 0
    with torch.autocast(device_type=x.device.type, enabled=False):
        adv = _pgd_steps(model, x.float(), labels, epsilon, step_size, steps, gen)
    model.train(was_training)
    return adv.to(x.dtype)


def _pgd_steps(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, epsilon: float,
               step_size: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    adv = (x + step_size * noise).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), labels)
        (grad,) = torch.autograd.grad(loss, [adv])
        adv = adv.detach() + step_size * grad.sign()
        adv = torch.min(torch.max(adv, x - epsilon), x + epsilon).clamp(0, 1)
    return adv.detach()


def build(defense: Defense, num_classes: int) -> TrainingDefense:
    """The step function of a training defense, with its parameters bound."""
    p = defense.params
    if defense.name == "cutout":
        return lambda x, labels, model, gen: (
            cutout(x, max(1, round(p["length_fraction"] * x.shape[-1])), gen), labels)
    if defense.name in ("mixup", "cutmix"):
        return _mixing(defense.name, p["alpha"], num_classes)
    if defense.name == "adversarial":
        return lambda x, labels, model, gen: (
            pgd(model, x, labels, p["epsilon"], p["step_size"], p["steps"], gen), labels)
    raise ValueError(f"{defense.name} is not a training defense")
