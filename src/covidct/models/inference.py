"""Run a checkpoint on a `Volume`: the same recipe as training, then slice or scan prediction.

Slice models (``unit == "slice"``, COVID-Net CT-2) classify every prepared slice; the patient
probability is the **mean of the slice probabilities** (``aggregate="mean"``, default) or, with
``aggregate="max"``, the slice probabilities of the slice with the highest non-first-class
probability (the most abnormal slice). Scan models (ai-corona, COVIDNet-3D, CovidCTNet) classify the
whole prepared volume once and return ``slice_probs=None``. For CovidCTNet predict with a
``covidctnet`` (denoiser + classifier) checkpoint: a ``covidctnet-classifier`` checkpoint alone
expects residual volumes, which the ``covidctnet`` recipe does not produce.

`predict_volume` is the one path from a volume to probabilities: the CLI, the evaluator, the
`Predictor` and `explain` all call it. It can time its stages (``timings``) and reuse an input the
caller already prepared (``prepared``); its `ScanPrediction` carries the prepared input and geometry
so explanations need neither a second preprocessing nor a second model pass.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covidct.errors import ConfigError, ShapeError
from covidct.models.checkpoint import Checkpoint, load_checkpoint

AGGREGATIONS = ("mean", "max")


@dataclass
class ScanPrediction:
    """One scan's prediction.

    Attributes:
        probs: (C,) float class probabilities (sum to 1).
        class_names: names of the C classes, in order.
        slice_probs: (S, C) per-slice probabilities for slice models, None for scan models.
        features: (D,) penultimate features (mean over slices for slice models).
        prepared: the recipe's output (model input + `Geometry`) the prediction was made on.
        backend: the backend that ran the model (``pytorch-cpu``, ``pytorch-cuda``, ``onnxruntime-cpu``).
    """

    probs: np.ndarray
    class_names: tuple[str, ...]
    slice_probs: np.ndarray | None
    features: np.ndarray
    prepared: Any = None
    backend: str | None = None

    @property
    def label(self) -> str:
        """Most probable class name."""
        return self.class_names[int(np.argmax(self.probs))]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probs": {c: float(p) for c, p in zip(self.class_names, self.probs, strict=True)},
            "slice_probs": None if self.slice_probs is None else self.slice_probs.tolist(),
        }


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - parameterless module
        return torch.device("cpu")


def _pre_logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    try:
        return model.forward_head(features, pre_logits=True)
    except TypeError:  # a head without the pre_logits switch: use the features flattened
        return features.flatten(1)


def input_tensor(array: np.ndarray) -> torch.Tensor:
    """A prepared model input (N, ...) as a float32 tensor sharing its memory (no copy).

    A recipe may return a read-only view (the 3 channels of a CT-2 slice are one grey image,
    `CovidNetCT2Recipe.prepare_volume`); nothing writes to model inputs, so it is
    shared as it is, without PyTorch's warning about read-only arrays.
    """
    a = np.asarray(array, dtype=np.float32)
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


@torch.no_grad()
def predict_tensor(
    model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 16, *, return_features: bool = False,
    rows: Sequence[int] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (K, C) of ``model`` on the ``rows`` of a batch ``x`` (N, ...) (default: all
    N rows, K = N), run ``batch_size`` rows at a time (gathered per batch, `batch_rows`).

    The model is put in eval mode. With ``return_features`` also returns the penultimate features (K, D).
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ShapeError(f"predict_tensor expects a non-empty batch (N, ...) but got shape {tuple(x.shape)}.")
    chunks = batch_rows(x.shape[0], batch_size, rows)
    model.eval()
    device = _model_device(model)
    # Untrained or barely trained weights produce denormal floats that slow CPU kernels 50-100x.
    torch.set_flush_denormal(True)
    channels_last = x.ndim == 4  # 2D convolution nets run 1.5-2x faster on CPU in NHWC
    if channels_last:
        model.to(memory_format=torch.channels_last)
    probs, feats = [], []
    for rows_of_batch in chunks:
        chunk = x[torch.from_numpy(rows_of_batch)].to(device)
        if channels_last:
            chunk = chunk.contiguous(memory_format=torch.channels_last)
        features = model.forward_features(chunk)
        logits = model.forward_head(features)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        if return_features:
            feats.append(_pre_logits(model, features).float().cpu())
    out = torch.cat(probs).numpy()
    if return_features:
        return out, torch.cat(feats).numpy()
    return out


def batch_rows(n: int, batch_size: int, rows: Sequence[int] | None = None) -> list[np.ndarray]:
    """The row indices of each batch: ``rows`` (default ``range(n)``), in order, ``batch_size`` at a time.

    Raises:
        ConfigError: ``batch_size`` < 1. ShapeError: no rows, or a row outside ``0..n-1``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    order = np.arange(n, dtype=np.intp) if rows is None else np.asarray(rows, dtype=np.intp).reshape(-1)
    if order.size == 0:
        raise ShapeError("No rows to run: pass at least one row.")
    if order.min() < 0 or order.max() >= n:
        raise ShapeError(f"Rows must lie in 0..{n - 1}; got {order.min()}..{order.max()}.")
    return [order[start : start + batch_size] for start in range(0, order.size, batch_size)]


def aggregate_slices(slice_probs: np.ndarray, how: str = "mean") -> np.ndarray:
    """Patient probabilities (C,) from slice probabilities (S, C).

    ``"mean"``: the mean over slices. ``"max"``: the probabilities of the most abnormal slice, the
    one with the lowest first-class (Normal / Non-COVID) probability.
    """
    if how not in AGGREGATIONS:
        raise ConfigError(f"Unknown aggregate {how!r}; use one of {', '.join(AGGREGATIONS)}.")
    if how == "mean":
        return slice_probs.mean(axis=0)
    abnormal = 1.0 - slice_probs[:, 0]
    return slice_probs[int(np.argmax(abnormal))]


@contextmanager
def timed(timings: MutableMapping[str, float] | None, stage: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[stage]`` (no-op without ``timings``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def recipe_of(checkpoint: Checkpoint) -> Any:
    """The checkpoint's `Recipe` (checkpoints store it as a dict)."""
    from covidct.preprocessing import recipe_from_dict

    recipe = checkpoint.recipe
    return recipe_from_dict(recipe) if isinstance(recipe, dict) else recipe


def _informative_rows(informative: np.ndarray | None, n: int) -> np.ndarray | None:
    """The (n,) bool mask of slices to score, or None for all (no mask, or a mask that keeps all)."""
    if informative is None:
        return None
    keep = np.asarray(informative, dtype=bool)
    if keep.shape != (n,):
        raise ShapeError(f"informative must be one bool per slice ({n}), got shape {keep.shape}.")
    if not keep.any():
        raise ShapeError("informative marks no slice; pass None to score every slice.")
    return None if keep.all() else keep


def predict_volume(
    checkpoint: Checkpoint | str | Path,
    volume,
    *,
    batch_size: int = 16,
    aggregate: str = "mean",
    backend: str = "torch",
    prepared: Any = None,
    timings: MutableMapping[str, float] | None = None,
    informative: np.ndarray | None = None,
) -> ScanPrediction:
    """Prepare ``volume`` with the checkpoint's own recipe and predict it.

    Args:
        checkpoint: a loaded `Checkpoint` or the path of one.
        volume: a `covidct.io.volume.Volume`.
        batch_size: slices (slice models) per forward pass.
        aggregate: slice -> patient rule for slice models: ``"mean"`` (default) or ``"max"``.
        backend: ``"torch"``, ``"onnx"`` (ONNX Runtime, exported once, parity-checked and cached) or
            ``"auto"`` (the faster of the two on this machine, timed once); a checkpoint whose model is
            on a CUDA device runs in PyTorch there; see `covidct.models.backends`.
        prepared: the recipe's `Prepared` output for ``volume`` when the caller already has it.
        timings: when given, seconds spent are added under ``"preprocess"`` and ``"model"``.
        informative: (S,) bool, slice models only: score just these slices (e.g. the slices with
            lung, `covidct.quant.lung_slices`). The others are non-informative: NaN rows in
            ``slice_probs``, left out of the patient probabilities and the features.
    """
    from covidct.models.backends import choose_backend

    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"Unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATIONS)}.")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    model = checkpoint.model
    if getattr(model, "task", "classification") != "classification":
        raise ConfigError(
            f"{checkpoint.model_name!r} is a {model.task} model, not a classifier; predict with a "
            "'covidctnet' (denoiser + classifier) or another classifier checkpoint."
        )
    is_slice_model = getattr(model, "unit", "slice") == "slice"
    num_slices = int(np.shape(volume.array)[0])
    keep = _informative_rows(informative, num_slices) if is_slice_model else None
    with timed(timings, "preprocess"):
        if prepared is None:
            recipe = recipe_of(checkpoint)
            prepared = (recipe.prepare_volume(volume) if keep is None
                        else recipe.prepare_volume(volume, slices=np.flatnonzero(keep).tolist()))
        x = input_tensor(prepared.array)
    class_names = tuple(checkpoint.class_names)
    with timed(timings, "model"):
        runner = choose_backend(model, tuple(x.shape[1:]) if is_slice_model else tuple(x.shape), backend)
        if is_slice_model:
            rows = list(prepared.geometry.slices)  # the volume slice of each prepared row
            positions = None  # every prepared row
            if keep is not None and not all(keep[s] for s in rows):  # score the informative rows
                positions = [k for k, s in enumerate(rows) if keep[s]]
                rows = [rows[k] for k in positions]
            scored, feats = runner.run(x, batch_size, positions)
            slice_probs = np.full((num_slices, scored.shape[1]), np.nan, dtype=scored.dtype)
            slice_probs[rows] = scored
            return ScanPrediction(probs=aggregate_slices(scored, aggregate), class_names=class_names,
                                  slice_probs=slice_probs, features=feats.mean(axis=0), prepared=prepared,
                                  backend=runner.name)
        probs, feats = runner.run(x[None], 1)
    return ScanPrediction(probs=probs[0], class_names=class_names, slice_probs=None, features=feats[0],
                          prepared=prepared, backend=runner.name)
