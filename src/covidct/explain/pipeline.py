"""`explain(checkpoint, volume, method=...)`: a heatmap volume, lung quantification and sanity numbers.

The checkpoint's own recipe prepares the volume; the method runs in model space; the heatmap is
mapped back to the volume grid (z, y, x) by undoing the recipe's geometry (body-box crop + resize
for covidnet-ct2, middle slices for ai-corona, depth resize + centre crop for covidnet-3d, depth and
in-plane resize for covidctnet) with linear interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from skimage.transform import resize

from covidct.errors import CovidCTError, ExplainError
from covidct.explain.lungs import LEFT_LUNG, RIGHT_LUNG, lung_volume_ml, segment_lungs
from covidct.explain.methods import HeatmapResult, compute_heatmap, get_method, predict_probs
from covidct.explain.quantify import HEATMAP_THRESHOLD, describe, quantify_abnormality
from covidct.explain.sanity import sanity_checks
from covidct.io.volume import Volume

AUTO_SLICES = 8
"""``slices='auto'``: how many slices are explained (slice models) or rendered (scan models)."""
DEFAULT_METHOD = "gradcam"


@dataclass
class Explanation:
    """Result of `explain`.

    ``heatmap``: float32 (z, y, x) in [0, 1] on the volume grid (0 on slices not explained).
    ``slices``: volume slice indices explained (slice models) or chosen for display (scan models).
    """

    method: str
    model_name: str
    class_names: tuple[str, ...]
    target_index: int | None
    target_class: str | None
    probability: float | None
    heatmap: np.ndarray
    slices: list[int]
    slice_probabilities: dict[int, float] = field(default_factory=dict)
    lung_labels: np.ndarray | None = None
    lung_volume_ml: dict[str, float] = field(default_factory=dict)
    quantification: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    sanity: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (everything but the arrays)."""
        return {
            "method": self.method,
            "model": self.model_name,
            "class_names": list(self.class_names),
            "class_explained": self.target_class,
            "probability": self.probability,
            "slices": self.slices,
            "slice_probabilities": {str(k): v for k, v in self.slice_probabilities.items()},
            "heatmap_shape": list(self.heatmap.shape),
            "lung_volume_ml": self.lung_volume_ml,
            "quantification": self.quantification,
            "description": self.description,
            "sanity": self.sanity,
            "extra": self.extra,
            "note": "Research use only, not for diagnosis.",
        }


# ---------------------------------------------------------------------------- slice selection
def parse_slices(spec: str | list[int] | None, n: int) -> list[int] | str:
    """'auto' / 'all' / 'i,j,...' (0-based volume slice indices) -> 'auto' or a sorted index list."""
    if spec is None or spec == "auto":
        return "auto"
    if spec == "all":
        return list(range(n))
    try:
        idx = sorted({int(v) for v in spec.split(",")} if isinstance(spec, str) else {int(v) for v in spec})
    except ValueError as exc:
        raise ExplainError(
            f"--slices must be 'auto', 'all' or comma-separated integers, got {spec!r}."
        ) from exc
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise ExplainError(f"Slice indices {bad or spec} are outside 0..{n - 1} (the volume has {n} slices).")
    return idx


def _target_index(target: int | str | None, class_names: tuple[str, ...], probs: np.ndarray) -> int:
    """Class index to explain: given as index or name, else the most probable class."""
    if target is None:
        return int(np.argmax(probs))
    if isinstance(target, str) and not target.isdigit():
        if target not in class_names:
            raise ExplainError(f"Class {target!r} is not one of the model's classes {list(class_names)}.")
        return class_names.index(target)
    idx = int(target)
    if not 0 <= idx < len(class_names):
        raise ExplainError(f"Class index {idx} is outside 0..{len(class_names) - 1} ({list(class_names)}).")
    return idx


# ---------------------------------------------------------------------------- model -> volume maps
def _resize(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return resize(arr.astype(np.float32), shape, order=1, mode="edge", anti_aliasing=False).astype(np.float32)


def _slice_boxes(recipe: Any, volume: Volume, indices: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """(xmin, ymin, xmax, ymax) crop box of each slice in ``indices`` for covidnet-ct2 recipes (else the
    whole slice). Per-slice boxes are computed for those slices only; a volume box needs every slice."""
    _, h, w = volume.shape
    if not (hasattr(recipe, "volume_boxes") and hasattr(recipe, "to_uint8")):
        return dict.fromkeys(indices, (0, 0, w, h))
    if getattr(recipe, "box_mode", "slice") == "volume":
        grey = recipe.to_uint8(np.asarray(volume.array), is_hu=volume.is_hu)
        boxes = recipe.volume_boxes(grey)
        return {i: tuple(int(v) for v in boxes[i]) for i in indices}
    return {
        i: tuple(int(v) for v in recipe.body_box(recipe.to_uint8(volume.array[i], is_hu=volume.is_hu)))
        for i in indices
    }


def _paste_slice(heat2d: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A (size, size) map back into a (H, W) slice at its crop box."""
    x0, y0, x1, y1 = box
    out = np.zeros(shape, np.float32)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = _resize(heat2d, (y1 - y0, x1 - x0))
    return out


def scan_heatmap_to_volume(heat: np.ndarray, recipe: Any, volume: Volume) -> np.ndarray:
    """Map a scan model's heatmap back to the volume grid (z, y, x)."""
    z, h, w = volume.shape
    name = getattr(recipe, "name", "")
    if name == "ai-corona":
        from covidct.preprocessing import MiddleSlices

        out = np.zeros(volume.shape, np.float32)
        out[MiddleSlices(recipe.fraction).indices(z)] = _resize(heat, (heat.shape[0], h, w))
        return out
    if name == "covidnet-3d":
        d, ch, cw = heat.shape
        full = np.zeros((d, recipe.resize_to, recipe.resize_to), np.float32)
        y0, x0 = (recipe.resize_to - ch) // 2, (recipe.resize_to - cw) // 2
        if y0 >= 0 and x0 >= 0:
            full[:, y0 : y0 + ch, x0 : x0 + cw] = heat
            heat = full
        return _resize(heat, (z, h, w))
    return _resize(heat, (z, h, w))


# ---------------------------------------------------------------------------- explain
def _explain_slices(model, prepared, method, target, spec, recipe, volume, options, slice_probs=None):
    """Slice model: explain the chosen slices one by one; returns (result, heat volume, slices, probs).

    ``slice_probs`` (S, C), when the caller already ran the model on ``prepared``, saves a second pass.
    """
    x = torch.as_tensor(prepared, dtype=torch.float32)
    if slice_probs is None:
        slice_probs = predict_probs(model, x).numpy()
    slice_probs = np.asarray(slice_probs)
    t = _target_index(target, tuple(model.class_names), slice_probs.mean(0))
    chosen = spec if spec != "auto" else sorted(np.argsort(-slice_probs[:, t])[:AUTO_SLICES].tolist())
    result = compute_heatmap(method, model, x[chosen], t, **options)
    boxes = _slice_boxes(recipe, volume, [int(s) for s in chosen])
    heat = np.zeros(volume.shape, np.float32)
    for k, s in enumerate(chosen):
        heat[s] = _paste_slice(result.heatmap[k], boxes[s], volume.shape[1:])
    probs = {int(s): round(float(slice_probs[s, t]), 5) for s in chosen}
    return result, heat, chosen, float(slice_probs[:, t].mean()), t, x[chosen[:1]], probs


def _explain_scan(model, prepared, method, target, recipe, volume, options):
    """Scan model: one input; returns (result, heat volume, target probability, target, item)."""
    x = torch.as_tensor(prepared, dtype=torch.float32)[None]
    if getattr(model, "task", "classification") != "classification":
        slices = torch.as_tensor(recipe.prepare_slices(volume)) if hasattr(recipe, "prepare_slices") else x[0]
        result = compute_heatmap(method, model, slices, None, **options)
        heat = _resize(result.heatmap, volume.shape)
        return result, heat, None, None, None
    probs = predict_probs(model, x).numpy()[0]
    t = _target_index(target, tuple(model.class_names), probs)
    result = compute_heatmap(method, model, x, t, **options)
    return result, scan_heatmap_to_volume(result.heatmap[0], recipe, volume), float(probs[t]), t, x


def _top_heat_slices(heat: np.ndarray, k: int = AUTO_SLICES) -> list[int]:
    mass = heat.reshape(heat.shape[0], -1).sum(1)
    return sorted(int(i) for i in np.argsort(-mass)[:k] if mass[i] > 0) or [heat.shape[0] // 2]


def _lung_summary(volume: Volume, heat: np.ndarray) -> tuple[np.ndarray | None, dict, dict, str, list[str]]:
    """Lung mask, volumes, quantification (HU rule + heatmap) and words; problems become notes."""
    notes: list[str] = []
    try:
        lungs = segment_lungs(volume)
    except CovidCTError as exc:
        return None, {}, {}, "", [f"lung segmentation failed: {exc}"]
    vols = {
        "total": round(lung_volume_ml(lungs, volume.spacing), 1),
        "right": round(lung_volume_ml(lungs, volume.spacing, RIGHT_LUNG), 1),
        "left": round(lung_volume_ml(lungs, volume.spacing, LEFT_LUNG), 1),
    }
    quant: dict[str, Any] = {}
    words = ""
    if volume.is_hu:
        hu = quantify_abnormality(volume, lungs)
        quant["hu_rule"], words = hu.to_dict(), describe(hu)
    else:
        notes.append("8-bit input: HU-rule quantification skipped")
    if np.any(heat):
        quant["heatmap"] = quantify_abnormality(volume, lungs, heat, threshold=HEATMAP_THRESHOLD).to_dict()
    return lungs, vols, quant, words, notes


def explain(
    checkpoint: Any,
    volume: Volume,
    *,
    method: str = DEFAULT_METHOD,
    slices: str | list[int] | None = "auto",
    target: int | str | None = None,
    sanity: bool = True,
    lungs: bool = True,
    prepared: np.ndarray | None = None,
    slice_probs: np.ndarray | None = None,
    **options: Any,
) -> Explanation:
    """Explain a checkpoint's prediction on a volume.

    Args:
        checkpoint: a `covidct.models.Checkpoint` or the path of one.
        volume: the `Volume` (z, y, x).
        method: a registered method name (`covidct.explain.list_methods()`).
        slices: 'auto' (the `AUTO_SLICES` most probable slices of the explained class for slice
            models; the hottest slices for display with scan models), 'all', or 'i,j' indices.
        target: class name or index to explain (default: the predicted class).
        sanity: run the randomisation and deletion/insertion checks on one explained item.
        lungs: segment the lungs and quantify abnormality.
        prepared: the recipe's output for ``volume`` when the caller already has it (saves a pass).
        slice_probs: (S, C) slice probabilities of a slice model on ``prepared`` (saves a model pass).
        options: passed to the method (e.g. ``patch``, ``stride``, ``n_segments``, ``steps``).
    """
    from covidct.models import Checkpoint, load_checkpoint
    from covidct.preprocessing import recipe_from_dict

    get_method(method)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    model, recipe = ckpt.model.eval(), recipe_from_dict(ckpt.recipe)
    spec = parse_slices(slices, volume.num_slices)
    prepared = np.asarray(recipe.prepare_volume(volume) if prepared is None else prepared)
    explained_probs: dict[int, float] = {}
    if (
        getattr(model, "unit", "slice") == "slice"
        and getattr(model, "task", "classification") == "classification"
    ):
        result, heat, chosen, prob, t, item, explained_probs = _explain_slices(
            model, prepared, method, target, spec, recipe, volume, options, slice_probs
        )
    else:
        result, heat, prob, t, item = _explain_scan(model, prepared, method, target, recipe, volume, options)
        chosen = _top_heat_slices(heat) if spec == "auto" else spec
    exp = Explanation(
        method=method,
        model_name=ckpt.model_name,
        class_names=tuple(ckpt.class_names),
        target_index=t,
        target_class=ckpt.class_names[t] if t is not None else None,
        probability=None if prob is None else round(prob, 5),
        heatmap=heat,
        slices=[int(s) for s in chosen],
        slice_probabilities=explained_probs,
        extra=_jsonable(result),
    )
    if sanity and item is not None and t is not None:
        exp.sanity = sanity_checks(method, model, item, t, result.heatmap[0], **options).to_dict()
    if lungs:
        exp.lung_labels, exp.lung_volume_ml, exp.quantification, exp.description, notes = _lung_summary(
            volume, heat
        )
        exp.extra["notes"] = notes
    return exp


def _jsonable(result: HeatmapResult) -> dict[str, Any]:
    return {k: v for k, v in result.extra.items() if isinstance(v, (int, float, str, list, dict, tuple))}
