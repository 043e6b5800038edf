"""CovidCTNet (Javaheri et al.): BCDU-Net denoiser, residual maps, and a small 3D CNN classifier.

Pipeline: every 240x240 slice (HU [-1000, 400] -> [0, 1], 1 mm resampling) goes through a BCDU-Net
trained on control slices only, half of them corrupted with Perlin noise (an augmentation:
`covidct.preprocessing.augment.perlin_noise`), to reconstruct the clean slice. Infection, which the
denoiser never saw, is "removed" as if it were
noise, so ``residual = slice - reconstruction`` (`residual_map`) highlights it. 50 residual slices
form a 50x240x240 volume that the 3D CNN classifies into COVID-19 / CAP / control (`CLASSES_3`).

Registered models:
* ``covidctnet-denoiser`` (`BCDUNet`): U-Net encoder (two 3x3 conv + ReLU per level, widths
  w, 2w, 4w, 8w with w = 32 by default, 64 as an option), a densely connected bottleneck (three
  conv blocks, the third reading the concatenation of the first two, as BCDU-Net "D3"), and a
  decoder where a bidirectional ConvLSTM (`BiConvLSTM2D`) fuses the skip features and the
  up-sampled features (treated as a 2-step sequence) at every level. Output: sigmoid
  reconstruction (N, 1, H, W); H and W must be divisible by 8.
* ``covidctnet-classifier`` (`CovidCTNetClassifier`): five pairs of 3x3x3 convolutions (with
  bias, ReLU, no normalisation: Keras style) of 8, 16, 32, 64, 128 filters, each pair followed by
  2x2x2 max pooling, flatten, dense 32 + ReLU, dropout 0.3, dense 3. The padding of each of the ten
  convolutions is a parameter; the default is the authors' released Keras model
  (``Training-CovidCTNet.ipynb``): the first convolution 'valid', the other nine 'same', which at
  50x128x128 gives (128, 1, 3, 3) = 1,152 flatten features and 920,715 parameters. At the paper's
  50x240x240 the flatten is 6,272 (1,084,555 parameters). The flatten width is computed from
  ``input_shape``. `covidct.models.importers` loads the released weights into it.
* ``covidctnet``: the whole pipeline in one module (denoiser + classifier) on (N, 1, D, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from covidct.classes import CLASSES_3
from covidct.errors import ConfigError, ShapeError
from covidct.models.base import CovidCTModel, resolve_class_names
from covidct.models.registry import register_model

IN_CHANNELS = 1
SLICE_SIZE = 240
NUM_SLICES = 50
DENOISER_INPUT = (IN_CHANNELS, SLICE_SIZE, SLICE_SIZE)
CLASSIFIER_INPUT = (IN_CHANNELS, NUM_SLICES, SLICE_SIZE, SLICE_SIZE)
CLASSIFIER_FILTERS = (8, 16, 32, 64, 128)
CLASSIFIER_PADDINGS = ("valid",) + ("same",) * 9
"""Padding of each of the ten convolutions, as in the authors' released Keras model."""
CONVS_PER_PAIR = 2
HIDDEN_UNITS = 32
DROPOUT = 0.3
DENOISER_LEVELS = 3
DENOISER_FACTOR = 2**DENOISER_LEVELS


# --------------------------------------------------------------------------------------------
# BCDU-Net denoiser
# --------------------------------------------------------------------------------------------
class ConvBlock2d(nn.Sequential):
    """Two 3x3 'same' convolutions with bias + ReLU: (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class ConvLSTM2D(nn.Module):
    """Convolutional LSTM over a sequence (N, T, C, H, W) -> last hidden state (N, hidden, H, W).

    Gates i, f, o, g come from one 3x3 convolution of [x_t, h_{t-1}]; c_t = f*c + i*g, h_t = o*tanh(c_t).
    """

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        n, _, _, h, w = seq.shape
        state_h = seq.new_zeros((n, self.hidden, h, w))
        state_c = seq.new_zeros((n, self.hidden, h, w))
        for t in range(seq.shape[1]):
            i, f, o, g = self.gates(torch.cat([seq[:, t], state_h], dim=1)).chunk(4, dim=1)
            state_c = torch.sigmoid(f) * state_c + torch.sigmoid(i) * torch.tanh(g)
            state_h = torch.sigmoid(o) * torch.tanh(state_c)
        return state_h


class BiConvLSTM2D(nn.Module):
    """Bidirectional ConvLSTM: forward and backward passes over (N, T, C, H, W), last states concatenated.

    Output (N, 2 * hidden, H, W) (Keras ``Bidirectional(..., merge_mode="concat")``).
    """

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.forward_lstm = ConvLSTM2D(in_channels, hidden)
        self.backward_lstm = ConvLSTM2D(in_channels, hidden)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.forward_lstm(seq), self.backward_lstm(seq.flip(1))], dim=1)


class UpFuse(nn.Module):
    """Decoder level: 2x transposed conv (+BN+ReLU), BiConvLSTM over [skip, up], two 3x3 convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )
        self.fuse = BiConvLSTM2D(cout, cout // 2)
        self.conv = ConvBlock2d(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        return self.conv(self.fuse(torch.stack([skip, up], dim=1)))


@register_model("covidctnet-denoiser")
class BCDUNet(CovidCTModel):
    """BCDU-Net denoiser: (N, 1, H, W) in [0, 1] -> reconstruction (N, 1, H, W) in (0, 1)."""

    recipe_name = "covidctnet"
    cam_layer = "bottleneck"
    unit = "slice"
    data_units = ("denoise",)
    other_recipes = ("covidctnet-released",)
    task = "denoising"

    def __init__(self, base_width: int = 32, input_size: int = SLICE_SIZE, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.class_names = ()
        self.input_shape = (IN_CHANNELS, input_size, input_size)
        widths = [base_width * 2**i for i in range(DENOISER_LEVELS + 1)]
        self.encoders = nn.ModuleList(
            ConvBlock2d(cin, cout) for cin, cout in zip([IN_CHANNELS, *widths[:2]], widths[:3], strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(drop_rate)
        self.bottleneck = DenseBottleneck(widths[2], widths[3], drop_rate)
        self.decoders = nn.ModuleList(
            UpFuse(widths[i + 1], widths[i]) for i in reversed(range(DENOISER_LEVELS))
        )
        self.head = nn.Sequential(
            nn.Conv2d(widths[0], 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 1), nn.Sigmoid()
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> last decoder features (N, base_width, H, W)."""
        self.check_input(x, "NCHW", IN_CHANNELS)
        if x.shape[-1] % DENOISER_FACTOR or x.shape[-2] % DENOISER_FACTOR:
            raise ShapeError(
                f"{self.name or 'covidctnet-denoiser'} needs H and W divisible by {DENOISER_FACTOR} "
                f"but got {tuple(x.shape[-2:])}; pad or resize slices (the recipe gives 240x240)."
            )
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i == len(self.encoders) - 1:
                x = self.drop(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            x = decoder(x, skip)
        return x

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, base_width, H, W) -> sigmoid reconstruction (N, 1, H, W) (features if ``pre_logits``)."""
        if pre_logits:
            return features.mean(dim=(2, 3))
        return self.head(features)


class DenseBottleneck(nn.Module):
    """BCDU-Net densely connected bottleneck: D1 = conv(x), D2 = conv(D1), D3 = conv([D2, D1])."""

    def __init__(self, cin: int, width: int, drop_rate: float) -> None:
        super().__init__()
        self.block1 = ConvBlock2d(cin, width)
        self.block2 = ConvBlock2d(width, width)
        self.block3 = ConvBlock2d(2 * width, width)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.drop(self.block1(x))
        d2 = self.drop(self.block2(d1))
        return self.block3(torch.cat([d2, d1], dim=1))


def residual_map(denoiser: nn.Module, slices: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """``slices - denoiser(slices)`` for slices (N, 1, H, W); highlights what the denoiser removed.

    ``batch_size`` limits how many slices go through the denoiser at once (None: all).
    """
    if slices.ndim != 4 or slices.shape[1] != IN_CHANNELS:
        raise ShapeError(f"residual_map expects slices (N, 1, H, W) but got shape {tuple(slices.shape)}.")
    step = batch_size or slices.shape[0]
    recon = torch.cat([denoiser(slices[i : i + step]) for i in range(0, slices.shape[0], step)])
    return slices - recon


# --------------------------------------------------------------------------------------------
# 3D CNN classifier
# --------------------------------------------------------------------------------------------
def per_conv_paddings(paddings: Sequence[str], n_pairs: int) -> tuple[str, ...]:
    """One padding per convolution: ``paddings`` has one per conv (2 x pairs) or one per pair (repeated)."""
    paddings = tuple(paddings)
    if len(paddings) == n_pairs:
        paddings = tuple(p for p in paddings for _ in range(CONVS_PER_PAIR))
    if len(paddings) != CONVS_PER_PAIR * n_pairs or any(p not in ("valid", "same") for p in paddings):
        raise ConfigError(
            f"paddings must be {CONVS_PER_PAIR * n_pairs} (one per convolution) or {n_pairs} (one per pair) "
            f"values of 'valid'/'same', got {paddings}."
        )
    return paddings


def classifier_feature_shape(
    input_shape: Sequence[int], paddings: Sequence[str] = CLASSIFIER_PADDINGS
) -> tuple[int, int, int]:
    """Spatial (D, H, W) after the conv pairs for ``input_shape`` (C, D, H, W); ShapeError if it collapses.

    ``paddings``: one per convolution, two convolutions then 2x2x2 floor max pooling per pair.
    """
    dims = list(input_shape[1:])
    for index, padding in enumerate(paddings):
        if padding == "valid":
            dims = [d - 2 for d in dims]
        if index % CONVS_PER_PAIR == CONVS_PER_PAIR - 1:
            dims = [d // 2 for d in dims]
        if min(dims) < 1:
            raise ShapeError(
                f"covidctnet-classifier cannot take input {tuple(input_shape)}: an axis shrinks to 0 through "
                f"the convolutions (paddings {tuple(paddings)}). Use at least 1x34x34x34; the paper uses "
                f"{CLASSIFIER_INPUT}."
            )
    return tuple(dims)  # type: ignore[return-value]


class ConvPair3d(nn.Sequential):
    """Two 3x3x3 convs (bias, ReLU), each with 'valid' or 'same' padding."""

    def __init__(self, cin: int, cout: int, paddings: Sequence[str]) -> None:
        first, second = (0 if p == "valid" else 1 for p in paddings)
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=first),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=second),
            nn.ReLU(inplace=True),
        )


@register_model("covidctnet-classifier")
class CovidCTNetClassifier(CovidCTModel):
    """3D CNN on residual volumes: (N, 1, D, H, W) (default 1x50x240x240) -> logits (N, 3)."""

    recipe_name = "covidctnet"
    cam_layer = "blocks.4"
    unit = "scan"
    data_units = ("residual",)
    other_recipes = ("covidctnet-released",)
    fixed_input = True

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        input_shape: Sequence[int] = CLASSIFIER_INPUT,
        filters: Sequence[int] = CLASSIFIER_FILTERS,
        paddings: Sequence[str] = CLASSIFIER_PADDINGS,
        hidden_units: int = HIDDEN_UNITS,
        drop_rate: float = DROPOUT,
    ) -> None:
        super().__init__()
        paddings = per_conv_paddings(paddings, len(filters))
        self.class_names = resolve_class_names(num_classes, class_names, CLASSES_3)
        self.input_shape = tuple(int(v) for v in input_shape)
        chans = [IN_CHANNELS, *filters]
        self.blocks = nn.ModuleList(
            ConvPair3d(chans[i], chans[i + 1], paddings[2 * i : 2 * i + 2]) for i in range(len(filters))
        )
        self.pool = nn.MaxPool3d(2)
        self.feature_shape = classifier_feature_shape(self.input_shape, paddings)
        self.num_flat = filters[-1] * math.prod(self.feature_shape)
        self.fc1 = nn.Linear(self.num_flat, hidden_units)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_units, len(self.class_names))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, D, H, W) -> pooled last-pair maps (N, 128, d, h, w); (N, 128, 1, 7, 7) at 50x240x240."""
        self.check_input(x, "NCDHW", IN_CHANNELS)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"{self.name or 'covidctnet-classifier'} was built for input {self.input_shape} (its dense "
                f"layer has {self.num_flat} inputs) but got {tuple(x.shape[1:])}. Build the model with "
                f"input_shape={tuple(x.shape[1:])} or resample the volume with the 'covidctnet' recipe."
            )
        for block in self.blocks:
            x = self.pool(block(x))
        return x

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, 128, d, h, w) -> logits (N, C), or the 32-d hidden activations if ``pre_logits``."""
        hidden = self.act(self.fc1(features.flatten(1)))
        if pre_logits:
            return hidden
        return self.fc2(self.drop(hidden))


# --------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------
@register_model("covidctnet")
class CovidCTNet(CovidCTModel):
    """Denoise each slice, take the residual, classify the residual volume: (N, 1, D, H, W) -> logits."""

    recipe_name = "covidctnet"
    cam_layer = "classifier.blocks.4"
    unit = "scan"
    data_units = ("scan",)
    other_recipes = ("covidctnet-released",)
    fixed_input = True

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        input_shape: Sequence[int] = CLASSIFIER_INPUT,
        denoiser_width: int = 32,
        slice_batch: int = 16,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.denoiser = BCDUNet(base_width=denoiser_width, input_size=self.input_shape[-1])
        self.classifier = CovidCTNetClassifier(num_classes, class_names, self.input_shape)
        self.class_names = self.classifier.class_names
        self.slice_batch = slice_batch

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, D, H, W) -> residual volume (N, 1, D, H, W) = x - denoiser(x) slice by slice."""
        self.check_input(x, "NCDHW", IN_CHANNELS)
        n, c, d, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)
        res = residual_map(self.denoiser, slices, self.slice_batch)
        return res.reshape(n, d, c, h, w).permute(0, 2, 1, 3, 4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, D, H, W) -> classifier feature maps of the residual volume."""
        return self.classifier.forward_features(self.residuals(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.classifier.forward_head(features, pre_logits=pre_logits)
