"""COVID-Net CT-2 L and S: slice classifiers built from PEPX modules and pointwise hub convolutions.

What the paper says (Gunraj et al., COVID-Net CT-2; COVID-Net CT before it): the macroarchitecture
was found by machine-driven design exploration; it is "a heterogeneous mix of strided and unstrided
depthwise and pointwise convolutions", made of projection-expansion-projection-extension (PEPX)
modules (1x1 projection, 1x1 expansion, 3x3 depthwise, 1x1 projection, 1x1 extension), with
selective long-range connections through pointwise "hub" convolutions; L and S share the
macroarchitecture and differ in width. The released models are TensorFlow graphs without source,
so the exact per-layer widths are unknown. This module builds that family:

* stem: 3x3 strided convolution (3 -> ``stem_width``, 512 -> 256 px), BN + ReLU;
* four stages; each starts with a **hub**: a strided 3x3 depthwise convolution followed by a 1x1
  pointwise convolution that projects the previous stage's accumulated output (itself the sum of
  the previous hub and every module of that stage) to the new width. The hub thus carries the
  long-range connection from one stage to the next (heterogeneous strided depthwise + pointwise);
* inside a stage, ``depth`` unstrided PEPX modules; each module reads the running sum of the hub
  and all earlier module outputs, and adds its own output to it (the dense additive connectivity
  seen in the COVID-Net CT figure);
* head: global average pooling (so any in-plane size works; tests run at 64 px), dropout, linear.

BatchNorm + ReLU follow every convolution (the TF graphs use batch norm too). L and S share the
macroarchitecture (stem 48, stage depths 2/4/2/4, projection = width/4, expansion = 2 x projection)
and differ only in stage widths: L (136, 264, 328, 472), S (104, 168, 168, 248). These were found by
a small search over the family for the published sizes at 3x512x512 with 3 classes:

=====  ===================  ====================  ==========================  ==========================
model  params (published)   params (here)         FLOPs = 2 x MACs (publ.)    FLOPs (here)
=====  ===================  ====================  ==========================  ==========================
L      1,399.38 K           1,400.12 K (+0.05 %)  4.18 G                      4.204 G (+0.6 %)
S      447.57 K             448.12 K (+0.12 %)    1.94 G                      1.947 G (+0.3 %)
=====  ===================  ====================  ==========================  ==========================

FLOPs here are 2 x MACs of conv + linear layers (TF-profiler convention, see
`covidct.models.complexity`); `tests/models` checks the 5 % / 10 % tolerances.
``channels_last`` memory format is supported (``model.to(memory_format=torch.channels_last)``).
Initialisation: He (fan-in) convolutions, and the last BN of every PEPX at zero, so each module
starts as a no-op on the running sum and the untrained network keeps activations O(1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from covidct.classes import CLASSES_3
from covidct.models.base import CovidCTModel, resolve_class_names
from covidct.models.registry import register_model

IN_CHANNELS = 3
PAPER_SIZE = 512


def _make_divisible(value: float, divisor: int = 8) -> int:
    return max(divisor, int(round(value / divisor)) * divisor)


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class PEPX(nn.Module):
    """Projection-expansion-projection-extension: (N, C, H, W) -> (N, C_out, H/stride, W/stride).

    1x1 projection C -> P, 1x1 expansion P -> E, 3x3 depthwise on E, 1x1 projection E -> P,
    1x1 extension P -> C_out.
    """

    def __init__(self, cin: int, cout: int, proj: int, expand: int, stride: int = 1) -> None:
        super().__init__()
        self.project_in = ConvBnAct(cin, proj)
        self.expand = ConvBnAct(proj, expand)
        self.depthwise = ConvBnAct(expand, expand, 3, stride=stride, groups=expand)
        self.project_out = ConvBnAct(expand, proj)
        self.extend = ConvBnAct(proj, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        x = self.expand(x)
        x = self.depthwise(x)
        x = self.project_out(x)
        return self.extend(x)


class Hub(nn.Sequential):
    """Pointwise hub: strided 3x3 depthwise (C_in) then 1x1 pointwise C_in -> C_out."""

    def __init__(self, cin: int, cout: int, stride: int = 2) -> None:
        super().__init__(ConvBnAct(cin, cin, 3, stride=stride, groups=cin), ConvBnAct(cin, cout))


class Stage(nn.Module):
    """A hub followed by ``depth`` PEPX modules with additive dense connectivity.

    (N, C_in, H, W) -> (N, C_out, H/2, W/2); output = hub + sum of module outputs.
    """

    def __init__(self, cin: int, cout: int, depth: int, proj_ratio: float, expand_ratio: float) -> None:
        super().__init__()
        self.hub = Hub(cin, cout)
        proj = _make_divisible(cout * proj_ratio)
        expand = _make_divisible(proj * expand_ratio)
        self.blocks = nn.ModuleList(PEPX(cout, cout, proj, expand) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.hub(x)
        for block in self.blocks:
            acc = acc + block(acc)
        return acc


class CovidNetCT2(CovidCTModel):
    """COVID-Net CT-2 family; input (N, 3, H, W) in [0, 1] (lung window, 3 copies), logits (N, C)."""

    recipe_name = "covidnet-ct2"
    cam_layer = "stages.3"
    unit = "slice"

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        stem_width: int = 48,
        widths: Sequence[int] = (136, 264, 328, 472),
        depths: Sequence[int] = (2, 4, 2, 4),
        proj_ratio: float = 0.25,
        expand_ratio: float = 2.0,
        drop_rate: float = 0.2,
        input_size: int = PAPER_SIZE,
    ) -> None:
        super().__init__()
        self.class_names = resolve_class_names(num_classes, class_names, CLASSES_3)
        self.input_shape = (IN_CHANNELS, input_size, input_size)
        self.stem = ConvBnAct(IN_CHANNELS, stem_width, 3, stride=2)
        chans = [stem_width, *widths]
        self.stages = nn.Sequential(
            *(Stage(chans[i], chans[i + 1], depths[i], proj_ratio, expand_ratio) for i in range(len(widths)))
        )
        self.num_features = chans[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, len(self.class_names))
        self.init_weights()

    def init_weights(self) -> None:
        """He (fan-in, right for depthwise too) convs, unit BN, zero last BN in PEPX, small linear head."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        for module in self.modules():  # each PEPX starts as a no-op on the running sum (stable depth)
            if isinstance(module, PEPX):
                nn.init.zeros_(module.extend[1].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> last stage feature maps (N, C_feat, H/32, W/32)."""
        self.check_input(x, "NCHW", IN_CHANNELS)
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, C_feat, h, w) -> logits (N, num_classes), or pooled features (N, C_feat) if ``pre_logits``."""
        pooled = self.pool(features).flatten(1)
        if pre_logits:
            return pooled
        return self.fc(self.drop(pooled))


@register_model("covidnet-ct2-l")
class CovidNetCT2L(CovidNetCT2):
    """COVID-Net CT-2 L (published: 1,399.38 K parameters, 4.18 GFLOPs at 3x512x512)."""

    default_config = {"widths": (136, 264, 328, 472)}


@register_model("covidnet-ct2-s")
class CovidNetCT2S(CovidNetCT2):
    """COVID-Net CT-2 S (published: 447.57 K parameters, 1.94 GFLOPs at 3x512x512)."""

    default_config = {"widths": (104, 168, 168, 248)}
