"""Tiny CNNs whose decision depends on a known region only, so heatmaps can be checked against it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

SIZE_2D = 32
REGION_2D = (slice(4, 12), slice(18, 28))
SIZE_3D = 16
REGION_3D = (slice(2, 7), slice(9, 15), slice(3, 9))
LOGIT_SCALE = 20.0


class Gate(nn.Module):
    """Multiplies the input by a fixed 0/1 spatial mask: only the region reaches the classifier."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class RegionCNN(nn.Module):
    """(N, 1, *spatial) -> 2 logits; class 1 = bright signal inside the region (2D or 3D)."""

    cam_layer = "features.2"

    def __init__(self, size: int, region: tuple[slice, ...], dims: int) -> None:
        super().__init__()
        mask = torch.zeros((1, 1) + (size,) * dims)
        mask[(0, 0, *region)] = 1.0
        conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
        conv = conv_cls(1, 4, 3, padding=1)
        with torch.no_grad():
            conv.weight.fill_(1.0 / 3**dims)
            conv.bias.zero_()
        self.features = nn.Sequential(Gate(mask), conv, nn.ReLU())
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]) * LOGIT_SCALE)
            self.fc.bias.copy_(torch.tensor([2.0, -2.0]))
        self.class_names = ("Normal", "COVID-19")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean(dim=tuple(range(2, features.ndim)))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class NoHead3D(nn.Module):
    """3D CNN with a conv 'head' (no linear classifier)."""

    cam_layer = "conv"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


def region_input(size: int, region: tuple[slice, ...], dims: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Low noise everywhere plus a bright block in the region: (n, 1, *spatial)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1) + (size,) * dims, generator=gen) * 0.2
    x[(slice(None), slice(None), *region)] += 0.8
    return x


@pytest.fixture
def model2d() -> RegionCNN:
    return RegionCNN(SIZE_2D, REGION_2D, 2).eval()


@pytest.fixture
def model3d() -> RegionCNN:
    return RegionCNN(SIZE_3D, REGION_3D, 3).eval()


@pytest.fixture
def x2d() -> torch.Tensor:
    return region_input(SIZE_2D, REGION_2D, 2)


@pytest.fixture
def x3d() -> torch.Tensor:
    return region_input(SIZE_3D, REGION_3D, 3, n=1)
