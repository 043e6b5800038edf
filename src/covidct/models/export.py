"""ONNX export of a model, checked against PyTorch with onnxruntime.

Uses the TorchScript-based exporter (``dynamo=False``; the dynamo exporter needs ``onnxscript``,
which is not a dependency). The batch axis is dynamic, so are height/width of 2D models and
the slice axis of ai-corona;
3D volume models keep their built input shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covidct.extras import require_extra

OPSET = 17
DEFAULT_TOLERANCE = 1e-4


def _prepare_for_export(model: nn.Module) -> None:
    """Swap export-hostile pieces (MONAI's memory-efficient swish is a custom autograd Function)."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "set_swish"):
        backbone.set_swish(memory_efficient=False)


def _dynamic_axes(model: nn.Module, ndim: int) -> dict[str, dict[int, str]]:
    """Batch always; height/width for 2D models; slices too for ai-corona; 3D volumes stay fixed."""
    axes = {0: "batch"}
    if ndim == 4:
        axes.update({2: "height", 3: "width"})
    elif getattr(model, "recipe_name", "") == "ai-corona":
        axes.update({1: "slices", 3: "height", 4: "width"})
    out_axes = (
        {0: "batch", 2: "height", 3: "width"} if getattr(model, "task", "") == "denoising" else {0: "batch"}
    )
    return {"input": axes, "output": out_axes}


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_shape: Sequence[int] | None = None,
    opset: int = OPSET,
    seed: int = 0,
) -> float:
    """Export ``model`` (eval mode) to ONNX at ``path`` and return max |onnx - torch| on a random input.

    Args:
        input_shape: input without batch (default ``model.input_shape``); 2D models accept other
            sizes at run time, the 3D classifier only its built ``input_shape``.
    """
    require_extra("export", "onnx", "onnxruntime", feature="ONNX export")
    import onnxruntime as ort

    shape = tuple(input_shape or model.input_shape)
    model = model.cpu().eval()
    _prepare_for_export(model)
    x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(seed))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the Python-side shape checks
        expected = model(x).numpy()
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=_dynamic_axes(model, x.ndim),
            opset_version=opset,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    return float(np.abs(got - expected).max())
