"""ai-corona (Yousefzadeh et al.): EfficientNet-B3 per slice, mean over slices, dense classifier.

The paper feeds the middle 50 % of a scan's slices (512x512x3, the grey slice copied to 3
channels, ImageNet normalisation) one by one through an ImageNet-pretrained EfficientNet-B3 stripped
of its dense layers (1536-d after global average pooling), averages the S slice vectors into one
scan vector and classifies it with a dense layer into three classes (COVID-19 / CAP / normal;
here `CLASSES_3` order). The backbone is MONAI's ``EfficientNetBN("efficientnet-b3")``; nothing is
downloaded: ``weights=PATH`` loads a local ImageNet state dict into it.

Input (N, S, 3, H, W) and an optional ``mask`` (N, S) bool marking the real slices of scans padded
to a common S; the scan vector is the mean over valid slices only. CAM: `slice_feature_maps`
returns the last feature maps (after the head conv, BN and swish) that the pooled vector averages,
and ``cam_layer = "feature_maps"`` names the identity module that outputs them.

``num_slices`` only sets the default ``input_shape`` (32 x 3 x 512 x 512, used for size reports and
ONNX export); any number of slices works at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from covidct.classes import CLASSES_3
from covidct.errors import ShapeError, WeightsError
from covidct.models.base import CovidCTModel, resolve_class_names
from covidct.models.registry import register_model

BACKBONE = "efficientnet-b3"
NUM_FEATURES = 1536
IN_CHANNELS = 3
PAPER_SIZE = 512
DEFAULT_SLICES = 32
MAX_KEYS_SHOWN = 5
HEAD_KEY_PREFIX = "_fc."


def _load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local ImageNet state dict into ``backbone``; the 1000-class ``_fc`` head is ignored."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Weights file {path} does not exist. Give the path of a local EfficientNet-B3 ImageNet "
            "state dict (MONAI/efficientnet-pytorch key names); covidct never downloads weights."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise WeightsError(
            f"{path} is not a readable torch state dict ({type(exc).__name__}: {exc})."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict.")
    state = {k.removeprefix("backbone.").removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_KEY_PREFIX)}
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith(HEAD_KEY_PREFIX)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{path} does not match {BACKBONE}: {len(missing)} missing keys {missing[:MAX_KEYS_SHOWN]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:MAX_KEYS_SHOWN]}, {len(wrong)} shape "
            f"mismatches {wrong[:3]}. Use an EfficientNet-B3 state dict with MONAI key names."
        )
    backbone.load_state_dict(state, strict=False)


@register_model("ai-corona")
class AiCorona(CovidCTModel):
    """Scan classifier: (N, S, 3, H, W) [+ mask (N, S)] -> logits (N, C)."""

    recipe_name = "ai-corona"
    cam_layer = "feature_maps"
    unit = "scan"
    data_units = ("slice-set", "scan")
    non_persistent_config = ("weights",)

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        drop_rate: float = 0.3,
        weights: str | None = None,
        input_size: int = PAPER_SIZE,
        num_slices: int = DEFAULT_SLICES,
    ) -> None:
        super().__init__()
        self.class_names = resolve_class_names(num_classes, class_names, CLASSES_3)
        self.input_shape = (num_slices, IN_CHANNELS, input_size, input_size)
        # MONAI is imported here, not with the module: it takes ~2 s, and loading any checkpoint imports
        # every registered model's module (docs/results.md, issue 21 session 8)
        from monai.networks.nets import EfficientNetBN

        self.backbone = EfficientNetBN(BACKBONE, pretrained=False, spatial_dims=2, in_channels=IN_CHANNELS)
        self.backbone._fc = nn.Identity()  # classifier replaced by ours
        self.feature_maps = nn.Identity()
        self.num_features = NUM_FEATURES
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(NUM_FEATURES, len(self.class_names))
        if weights:
            _load_backbone_weights(self.backbone, weights)

    def slice_feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Last EfficientNet feature maps: (M, 3, H, W) or (N, S, 3, H, W) -> (M or N*S, 1536, H/32, W/32)."""
        if x.ndim == 5:
            x = x.flatten(0, 1)
        if x.ndim != 4 or x.shape[1] != IN_CHANNELS:
            raise ShapeError(
                f"{self.name or 'ai-corona'} slice_feature_maps expects (M, 3, H, W) or (N, S, 3, H, W) "
                f"but got shape {tuple(x.shape)}."
            )
        b = self.backbone
        if b._conv_stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # model.to(memory_format=channels_last)
        x = b._swish(b._bn0(b._conv_stem(b._conv_stem_padding(x))))
        x = b._blocks(x)
        x = b._swish(b._bn1(b._conv_head(b._conv_head_padding(x))))
        return self.feature_maps(x)

    def _check_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, s = x.shape[:2]
        if tuple(mask.shape) != (n, s):
            raise ShapeError(
                f"ai-corona mask must be (N, S) = {(n, s)} bool but got shape {tuple(mask.shape)}."
            )
        mask = mask.to(device=x.device, dtype=torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise ShapeError(
                "ai-corona mask marks no valid slice for at least one scan; every scan needs one."
            )
        return mask

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, S, 3, H, W) [+ mask (N, S) bool] -> scan features (N, 1536), mean over valid slices."""
        self.check_input(x, "NSCHW", IN_CHANNELS)
        n, s = x.shape[:2]
        if mask is None:  # every slice valid: no indexing (keeps meta-device counting and ONNX simple)
            pooled = self.slice_feature_maps(x.flatten(0, 1)).mean(dim=(2, 3))
            return pooled.view(n, s, -1).mean(dim=1)
        mask = self._check_mask(x, mask)
        flat_mask = mask.flatten()
        pooled = self.slice_feature_maps(x.flatten(0, 1)[flat_mask]).mean(dim=(2, 3))
        per_slice = pooled.new_zeros((n * s, pooled.shape[1]))
        per_slice[flat_mask] = pooled
        weights = mask.to(pooled.dtype).unsqueeze(-1)
        return (per_slice.view(n, s, -1) * weights).sum(dim=1) / weights.sum(dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 1536) -> logits (N, C) (or the features themselves if ``pre_logits``)."""
        if pre_logits:
            return features
        return self.fc(self.drop(features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, S, 3, H, W) [+ mask (N, S)] -> logits (N, C)."""
        return self.forward_head(self.forward_features(x, mask))
