"""Model complexity: parameter count and multiply-accumulate (MAC) count.

`count_macs` counts one MAC per multiply-add of every convolution (any dims, grouped and
depthwise included) and every linear layer, via forward hooks; normalisation, activations,
pooling, additions and LSTM gate element-wise products are not counted (they are < 1-2 % here).
``FLOPs = 2 x MACs`` (one multiply + one add), the convention of TensorFlow's profiler, which the
COVID-Net CT-2 paper used: its "4.18 GFLOPs" (L) and "1.94 GFLOPs" (S) are matched by
``count_flops`` = 2 x `count_macs`, i.e. 2.09 G and 0.97 G MACs.

By default the count runs on the ``meta`` device (shapes only, no memory, no arithmetic), so
even DenseNet-264 3D at 1x64x384x384 is counted in about a second.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(module: nn.modules.conv._ConvNd, inputs: torch.Tensor, output: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # each input element is multiplied into kernel * out_channels/groups outputs
        return inputs.numel() * kernel * module.out_channels // module.groups
    return output.numel() * kernel * module.in_channels // module.groups


def count_macs(
    model: nn.Module, input_shape: Sequence[int], *, batch: int = 1, device: str | torch.device = "meta"
) -> int:
    """Multiply-accumulates of one forward pass at ``(batch, *input_shape)`` (conv + linear only).

    Args:
        model: any module; it is deep-copied to ``device`` (the original is untouched).
        input_shape: input without the batch dimension, e.g. ``(3, 512, 512)``.
        device: ``"meta"`` (default, shape-only) or a real device.
    """
    counted = copy.deepcopy(model).to(device).eval()
    total = [0]

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, _CONV_TYPES):
            total[0] += _conv_macs(module, args[0], output)
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in counted.modules() if isinstance(m, _CONV_TYPES + (nn.Linear,))
    ]
    try:
        with torch.no_grad():
            counted(torch.zeros((batch, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def count_flops(model: nn.Module, input_shape: Sequence[int], **kwargs) -> int:
    """``2 x count_macs`` (multiply and add counted separately, TensorFlow-profiler convention)."""
    return 2 * count_macs(model, input_shape, **kwargs)
