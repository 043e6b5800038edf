"""`explain(checkpoint, volume, method=...)`: a heatmap volume, its share of the lung regions and sanity
numbers.

The checkpoint's own recipe prepares the volume (`covidct.models.inference.predict_volume`, the one
inference path); the method runs in model space; the heatmap goes back to the volume grid (z, y, x)
through the recipe's one inverse, ``recipe.to_volume(map, geometry)``, using the `Geometry` record
that preparation returned (crop boxes, selected slices, resize grid, flips).

Lungs, lesions, zones and periphery are not computed here: they come from the study's one
`covidct.quant.CTAnalysis` (the caller's, or `analyse_ct` once when none is given), and the heatmap is
measured in its regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from covidct.errors import ExplainError, QuantError
from covidct.explain.methods import HeatmapResult, compute_heatmap, get_method
from covidct.explain.sanity import sanity_checks
from covidct.io.volume import Volume
from covidct.models import Checkpoint, load_checkpoint
from covidct.models.inference import ScanPrediction, input_tensor, predict_volume, recipe_of
from covidct.preprocessing import CovidCTNetRecipe
from covidct.quant import CTAnalysis, analyse_ct

AUTO_SLICES = 8
"""``slices='auto'``: how many slices are explained (slice models) or rendered (scan models)."""
DEFAULT_METHOD = "gradcam"
HEATMAP_THRESHOLD = 0.5
"""Heat level in [0, 1] (after averaging onto the analysis grid) above which a voxel counts as flagged."""


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


# ---------------------------------------------------------------------------- explain
def _explain_slices(model, prediction, method, target, spec, recipe, options):
    """Slice model: explain the chosen volume slices; returns (result, heat volume, slices, prob, target,
    item, per-slice probabilities). The heatmap goes back through the recipe's own inverse."""
    prepared = prediction.prepared
    x = input_tensor(prepared.array)
    geometry = prepared.geometry
    # one row per prepared slice (the prediction has one per volume slice, NaN where not scored)
    slice_probs = np.asarray(prediction.slice_probs)[list(geometry.slices)]
    t = _target_index(target, tuple(model.class_names), np.nanmean(slice_probs, axis=0))
    if spec == "auto":
        rows = sorted(np.argsort(-slice_probs[:, t])[:AUTO_SLICES].tolist())
    else:
        rows = [geometry.model_slice_of(s) for s in spec]
        if None in rows:
            raise ExplainError(
                f"Slices {spec} were not all given to the model (it saw {list(geometry.slices)}).")
    result = compute_heatmap(method, model, x[rows], t, **options)
    heat = recipe.to_volume(result.heatmap, geometry, rows=rows)
    chosen = [geometry.slices[r] for r in rows]
    probs = {int(geometry.slices[r]): round(float(slice_probs[r, t]), 5) for r in rows}
    return result, heat, chosen, float(np.nanmean(slice_probs[:, t])), t, x[rows[:1]], probs


def _explain_scan(model, prediction, method, target, recipe, options):
    """Scan classifier: one input; returns (result, heat volume, target probability, target, item)."""
    prepared = prediction.prepared
    x = input_tensor(prepared.array)[None]
    t = _target_index(target, tuple(model.class_names), prediction.probs)
    result = compute_heatmap(method, model, x, t, **options)
    heat = recipe.to_volume(result.heatmap[0], prepared.geometry)
    return result, heat, float(prediction.probs[t]), t, x


def _explain_denoiser(model, method, recipe, volume, options):
    """A denoiser (CovidCTNet's BCDU-Net): the residual map of its 1 mm slices, on the volume grid."""
    if not isinstance(recipe, CovidCTNetRecipe):
        raise ExplainError(f"A {model.task} model is explained on the 'covidctnet' recipe's slices, but "
                           f"this checkpoint's recipe is {recipe.name!r}.")
    prepared = recipe.prepare_slices(volume)
    result = compute_heatmap(method, model, torch.as_tensor(prepared.array), None, **options)
    return result, recipe.to_volume(result.heatmap, prepared.geometry)


def _top_heat_slices(heat: np.ndarray, k: int = AUTO_SLICES) -> list[int]:
    mass = heat.reshape(heat.shape[0], -1).sum(1)
    return sorted(int(i) for i in np.argsort(-mass)[:k] if mass[i] > 0) or [heat.shape[0] // 2]


def _lung_summary(volume: Volume, heat: np.ndarray, analysis: CTAnalysis | None
                  ) -> tuple[np.ndarray | None, dict, dict, str, list[str]]:
    """Lung labels (volume grid), lung volumes, quantification (the analysis's lesions, and the heatmap
    in the analysis's regions) and words, all from ``analysis`` (`analyse_ct` here when None); when the
    analysis cannot run (8-bit input, no lungs) the reason becomes a note."""
    if analysis is None:
        try:
            analysis = analyse_ct(volume)
        except QuantError as exc:
            return None, {}, {}, "", [f"no lung quantification: {exc}"]
    quant: dict[str, Any] = {"hu_rule": analysis.lesion_quantification().to_dict()}
    if np.any(heat):
        flagged = analysis.to_analysis_grid(heat) >= HEATMAP_THRESHOLD
        quant["heatmap"] = analysis.regions.quantify(flagged, f"heatmap>={HEATMAP_THRESHOLD:g}").to_dict()
    return analysis.lung_labels_full(), analysis.lung_volume_ml(), quant, analysis.report.summary(), []


def explain(
    checkpoint: Any,
    volume: Volume,
    *,
    method: str = DEFAULT_METHOD,
    slices: str | list[int] | None = "auto",
    target: int | str | None = None,
    sanity: bool = True,
    lungs: bool = True,
    analysis: CTAnalysis | None = None,
    prediction: ScanPrediction | None = None,
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
        lungs: summarise the lungs (volumes, lesions, the heatmap's share per region).
        analysis: the study's `CTAnalysis` when the caller already has it (nothing is segmented
            again); `analyse_ct` runs here otherwise (HU volumes only).
        prediction: `predict_volume`'s result for this checkpoint and ``volume`` when the caller already
            has it (saves preprocessing and a model pass); computed here otherwise.
        options: passed to the method (e.g. ``patch``, ``stride``, ``n_segments``, ``steps``).
    """
    get_method(method)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    model, recipe = ckpt.model.eval(), recipe_of(ckpt)
    spec = parse_slices(slices, volume.num_slices)
    explained_probs: dict[int, float] = {}
    item, t, prob = None, None, None
    if getattr(model, "task", "classification") != "classification":
        result, heat = _explain_denoiser(model, method, recipe, volume, options)
        chosen = _top_heat_slices(heat) if spec == "auto" else spec
    else:
        if prediction is None:
            prediction = predict_volume(ckpt, volume)
        if recipe.unit == "slice":
            result, heat, chosen, prob, t, item, explained_probs = _explain_slices(
                model, prediction, method, target, spec, recipe, options)
        else:
            result, heat, prob, t, item = _explain_scan(model, prediction, method, target, recipe, options)
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
            volume, heat, analysis
        )
        exp.extra["notes"] = notes
    return exp


def _jsonable(result: HeatmapResult) -> dict[str, Any]:
    return {k: v for k, v in result.extra.items() if isinstance(v, (int, float, str, list, dict, tuple))}
