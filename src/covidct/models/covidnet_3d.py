"""COVIDNet-3D (Liu et al., Sci Rep 2021): a 3D DenseNet-264 with instance normalisation.

The paper classifies a whole scan resampled to 64 slices, resized to 512 and centre-cropped to
384 (HU clipped to [-1024, 1024] -> [0, 1]): input 1x64x384x384. The backbone is MONAI's
``DenseNet264(spatial_dims=3, in_channels=1, norm="instance")``, block configuration
(6, 12, 64, 48), growth rate 32, 64 initial features (as the paper's DenseNet-264). Default
classes are the paper's binary task, other pneumonia vs COVID-19: ``("Pneumonia", "COVID-19")``;
``num_classes=3`` gives `CLASSES_3`.

``gradient_checkpointing=True`` recomputes each dense block in the backward pass
(``torch.utils.checkpoint``), trading ~30 % more compute for far less activation memory in training.
Any input size divisible by 32 works (global average pooling), so tests run at 1x32x64x64 (the
stem and three transitions halve each axis five times: every axis needs >= 32 voxels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from covidct.classes import COVID, PNEUMONIA
from covidct.errors import ConfigError, ShapeError
from covidct.models.base import CovidCTModel, resolve_class_names
from covidct.models.registry import register_model

BLOCK_CONFIG = (6, 12, 64, 48)
IN_CHANNELS = 1
PAPER_INPUT = (IN_CHANNELS, 64, 384, 384)
DEFAULT_CLASSES = (PNEUMONIA, COVID)
DOWNSAMPLING = 32
"""The stem (/4) and three transitions (/8) shrink every axis 32-fold: smaller axes vanish."""


@register_model("covidnet-3d")
class CovidNet3D(CovidCTModel):
    """Scan classifier: (N, 1, D, H, W) in [0, 1] -> logits (N, C)."""

    recipe_name = "covidnet-3d"
    cam_layer = "feature_maps"
    unit = "scan"
    data_units = ("scan",)

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        norm: str = "instance",
        block_config: Sequence[int] = BLOCK_CONFIG,
        gradient_checkpointing: bool = False,
        drop_rate: float = 0.0,
        input_shape: Sequence[int] = PAPER_INPUT,
    ) -> None:
        super().__init__()
        self.class_names = resolve_class_names(num_classes, class_names, DEFAULT_CLASSES)
        self.input_shape = tuple(int(v) for v in input_shape)
        check_spatial_size(self.input_shape[1:], "input_shape", ConfigError)
        self.gradient_checkpointing = gradient_checkpointing
        from monai.networks.nets import DenseNet264  # imported here: see ai_corona.AiCorona.__init__

        backbone = DenseNet264(
            spatial_dims=3,
            in_channels=IN_CHANNELS,
            out_channels=len(self.class_names),
            block_config=tuple(block_config),
            norm=norm,
            dropout_prob=drop_rate,
        )
        self.features = backbone.features
        self.num_features = backbone.class_layers.out.in_features
        self.act = nn.ReLU(inplace=False)
        self.feature_maps = nn.Identity()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = backbone.class_layers.out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, D, H, W) -> final dense feature maps after norm + ReLU (N, 2688, D/32, H/32, W/32)."""
        self.check_input(x, "NCDHW", IN_CHANNELS)
        check_spatial_size(tuple(x.shape[2:]), "input", ShapeError)
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for name, layer in self.features.named_children():
            if use_ckpt and name.startswith("denseblock"):
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.feature_maps(self.act(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 2688, d, h, w) -> logits (N, C), or pooled features (N, 2688) if ``pre_logits``."""
        pooled = self.pool(features).flatten(1)
        return pooled if pre_logits else self.fc(pooled)


def check_spatial_size(spatial: Sequence[int], what: str, error: type[Exception]) -> None:
    """Raise ``error`` unless every axis of ``spatial`` (D, H, W) has at least `DOWNSAMPLING` voxels."""
    small = [int(v) for v in spatial if int(v) < DOWNSAMPLING]
    if small:
        raise error(
            f"covidnet-3d needs at least {DOWNSAMPLING} voxels along every axis (the network halves each "
            f"axis five times), but the {what} is {tuple(int(v) for v in spatial)} (D, H, W). "
            f"Resample the scan to at least {DOWNSAMPLING} slices and {DOWNSAMPLING} px in-plane, "
            "e.g. with the covidnet-3d recipe options depth/size."
        )
