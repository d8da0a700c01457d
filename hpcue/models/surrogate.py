"""The frozen surrogate whose feature space UC clusters and attacks.

ImageNet ResNets are read from a local file or the TORCH_HOME cache, never downloaded: compute
nodes have no internet, and the HPC fork's silent key-prefix mismatch (random weights, no error)
is why loading is strict here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hpcue.errors import InputError, MissingInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingWeightsError(MissingInputError):
    """Pretrained weights are not on disk; the message names the exact path to place them."""


def _torchvision_weights(arch: str):
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    table = {"resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet50": ResNet50_Weights.IMAGENET1K_V1}
    if arch not in table:
        raise InputError(f"no ImageNet weights known for {arch!r}: expected one of {list(table)}")
    return table[arch]


def cached_weights_path(arch: str) -> Path:
    """Where torchvision itself would cache the weights: $TORCH_HOME/hub/checkpoints/<file>."""
    url = _torchvision_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise InputError(f"{path}: not a readable PyTorch weights file ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, got {type(state).__name__}")
    # checkpoints saved from DDP or Lightning wrappers carry a prefix on every key
    for prefix in ("module.", "model.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def require_weights(arch: str, weights: Path | None) -> Path | None:
    """The weights file ``build_surrogate`` will read, or MissingWeightsError naming where it
    belongs; None for a small_cnn without weights (the cluster stage trains it). Cheap, so a
    stage checks it before it clears anything."""
    if arch == "small_cnn":
        if weights is not None and not Path(weights).is_file():
            raise MissingWeightsError(f"small_cnn surrogate weights not found at {weights}")
        return None if weights is None else Path(weights)
    if arch.startswith("clip_"):  # open_clip's OpenAI image towers (hpcue/models/clip.py)
        from hpcue.models.clip import require_clip_weights

        return require_clip_weights(arch, weights)
    path = Path(weights) if weights is not None else cached_weights_path(arch)
    if not path.is_file():
        raise MissingWeightsError(
            f"ImageNet weights for {arch} not found at {path}. Place torchvision's "
            f"{_torchvision_weights(arch).url.rsplit('/', 1)[-1]} there (TORCH_HOME sets the "
            f"cache folder) or set surrogate.weights to a local file; hpcue never downloads."
        )
    return path


def load_imagenet_resnet(arch: str, weights: Path | None = None) -> nn.Module:
    """torchvision ResNet with ImageNet weights from ``weights`` or the TORCH_HOME cache."""
    from torchvision import models

    path = require_weights(arch, weights)
    model = getattr(models, arch)(weights=None)
    try:
        model.load_state_dict(load_state_dict_file(path), strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match torchvision {arch}: {exc}") from None
    return model


class Surrogate(nn.Module):
    """Frozen feature extractor: [0,1] images in, features (the input of ``fc``) out.

    ``mean``/``std`` normalise for a backbone that expects it (torchvision's ImageNet ResNets);
    a backbone that normalises itself (the small CNN) gets none, so there is one normalisation,
    the one it was trained with.
    """

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        super().__init__()
        if not hasattr(backbone, "fc"):
            raise ValueError("surrogate backbone needs an `fc` head to take features before")
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.normalise = mean is not None
        if mean is not None and std is not None:
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Surrogate:
        """Always eval: batch-norm statistics of a frozen surrogate must not move."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / self.std
        return self.backbone(x)


def build_surrogate(arch: str, weights: Path | None) -> Surrogate:
    """Frozen surrogate; for small_cnn ``weights`` must exist (the cluster stage trains it).
    A ``clip_*`` arch is a CLIP image tower through open_clip (an optional dependency).

    The small CNN's shape is read from its weights: a self-supervised one was trained with
    a pretext head (4 rotations), a supervised one with one output per class.
    """
    if arch in ("resnet18", "resnet50"):
        return Surrogate(load_imagenet_resnet(arch, weights), IMAGENET_MEAN, IMAGENET_STD)
    if arch.startswith("clip_"):  # imported here: clip.py builds on this module
        from hpcue.models.clip import build_clip_surrogate

        return build_clip_surrogate(arch, weights)
    if arch == "small_cnn":
        from hpcue.models.small_cnn import SmallCNN

        if weights is None or not Path(weights).is_file():
            raise MissingWeightsError(f"small_cnn surrogate weights not found at {weights}")
        state = load_state_dict_file(Path(weights))
        head = state.get("fc.weight")
        if head is None or head.ndim != 2:
            raise InputError(f"{weights}: weights do not match small_cnn: no fc.weight")
        model = SmallCNN(head.shape[0], width=head.shape[1] // 4)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"{weights}: weights do not match small_cnn: {exc}") from None
        return Surrogate(model)
    raise InputError(f"unknown surrogate arch {arch!r}")
