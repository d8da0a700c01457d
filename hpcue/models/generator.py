"""Per-cluster perturbation generators: delta_k = bound(G_k(z_k)) with a fixed noise z_k."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: 7x7 in, two stride-2 downs, residual blocks, two ups, 7x7 out.

    Instance norm (no running statistics) so that the perturbation is the same in train and eval
    mode: the generator always sees one fixed noise image.
    At width 64 with 6 blocks it has about 7.8M parameters, as in the paper. ``channels`` is
    what it outputs: 3, or 1 for a gray data set (one change added to R, G and B alike).
    """

    def __init__(self, width: int = 64, blocks: int = 6, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(3, width, 7), nn.InstanceNorm2d(width), nn.ReLU(True),
        ]
        for mult in (1, 2):
            layers += [nn.Conv2d(width * mult, width * mult * 2, 3, stride=2, padding=1),
                       nn.InstanceNorm2d(width * mult * 2), nn.ReLU(True)]
        layers += [ResidualBlock(width * 4) for _ in range(blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       nn.InstanceNorm2d(width * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ClusterGenerators(nn.Module):
    """K generators and their K fixed noise images; ``forward()`` returns all K perturbations.

    One call gives every cluster's delta, so one pass over the data trains all K generators,
    each only through the images of its own cluster (the indexing in the objective does that).
    """

    def __init__(self, num_clusters: int, image_size: int, epsilon: float, width: int = 64,
                 blocks: int = 6, bound: str = "clamp", seed: int = 0,
                 channels: int = 3) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 for the generator, "
                             f"got {image_size}")
        self.epsilon = epsilon
        self.bound = bound
        self.channels = channels
        self.generators = nn.ModuleList(ResnetGenerator(width, blocks, channels)
                                        for _ in range(num_clusters))
        rng = torch.Generator().manual_seed(seed)
        self.register_buffer("noise", torch.rand(num_clusters, 1, 3, image_size, image_size,
                                                 generator=rng))

    @property
    def num_clusters(self) -> int:
        return len(self.generators)

    def forward(self, ids: list[int] | None = None) -> torch.Tensor:
        """The deltas of generators ``ids`` (default: all K), in that order."""
        ids = list(range(self.num_clusters)) if ids is None else ids
        if not ids:  # a rank that owns no generator (more ranks than generators)
            return self.noise.new_zeros((0, self.channels, *self.noise.shape[-2:]))
        raw = torch.cat([self.generators[k](self.noise[k]) for k in ids])
        if self.bound == "scale":
            return raw * self.epsilon
        return raw.clamp(-self.epsilon, self.epsilon)
