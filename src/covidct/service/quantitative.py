"""Quantitative CT in the service: the report section, the lesion overlays and the SR measurements.

`quantify_study(volume)` runs `covidct.quant.analyse_ct` (HU only, no trained weights) once per study
and never fails a study: 8-bit input or a scan without findable lungs gives a section saying it is not
available and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from covidct.errors import QuantError
from covidct.io.volume import Volume
from covidct.quant.analysis import (
    LESION_CONSOLIDATION,
    LESION_GGO,
    CTAnalysis,
    LungGrid,
    analyse_ct,
    analysis_unavailable,
    find_lungs,
)
from covidct.service import images

LESION_COLORS = {LESION_GGO: (255, 215, 0), LESION_CONSOLIDATION: (235, 45, 45)}
"""Overlay colours: ground glass yellow, consolidation red."""
LESION_ALPHA = 0.55
PERCENT = 100.0


@dataclass
class QuantOutcome:
    """The JSON section (``available`` True/False) and, when available, the `CTAnalysis` (which the
    Predictor shares with the lung-slice selection and the explanation: nothing is segmented twice) and
    its (z, y, x) lesion labels on the volume's grid."""

    section: dict[str, Any]
    analysis: CTAnalysis | None = None
    lesion_labels: np.ndarray | None = None


@dataclass(frozen=True)
class Measurement:
    """One numeric SR measurement: name, value and UCUM unit."""

    name: str
    value: float
    unit: str


def study_lungs(volume: Volume) -> LungGrid | QuantOutcome:
    """The study's lungs (`find_lungs`), or the not-available outcome when it cannot be analysed
    (8-bit input, no lungs found, ...): `quantify_study` finishes the analysis from either."""
    if not volume.is_hu:
        return QuantOutcome(analysis_unavailable(volume))
    try:
        return find_lungs(volume)
    except QuantError as exc:
        return _not_available(exc)


def quantify_study(volume: Volume, lungs: LungGrid | QuantOutcome | None = None) -> QuantOutcome:
    """Quantitative CT of one study; a not-available section instead of an error. ``lungs``: the
    study's `study_lungs` when the caller already has it (the lungs are not segmented again)."""
    lungs = study_lungs(volume) if lungs is None else lungs
    if isinstance(lungs, QuantOutcome):
        return lungs
    try:
        analysis = analyse_ct(volume, lungs=lungs)
    except QuantError as exc:
        return _not_available(exc)
    return QuantOutcome({"available": True, **analysis.to_dict()}, analysis, analysis.lesion_labels())


def _not_available(exc: QuantError) -> QuantOutcome:
    return QuantOutcome({"available": False, "reason": f"not available: {exc}"})


def involvement(section: dict[str, Any] | None) -> float | None:
    """Total involved fraction of the lungs, or None when the analysis is not available."""
    if not section or not section.get("available"):
        return None
    return float(section["involvement"]["total"])


def lesion_key_slices(section: dict[str, Any], k: int, num_slices: int) -> list[int]:
    """The ``k`` slices with the highest involvement (only slices with some), else the middle one."""
    values = np.asarray(section.get("slice_involvement") or [], float)
    if values.size != num_slices or not np.any(values > 0):
        return [num_slices // 2]
    order = [int(i) for i in np.argsort(-values, kind="stable")[:k] if values[i] > 0]
    return sorted(order)


def lesion_overlay(volume: Volume, lesion_labels: np.ndarray, k: int) -> np.ndarray:
    """Slice ``k`` in the lung window with ground glass (yellow) and consolidation (red) blended on:
    (H, W, 3) uint8."""
    grey = images.to_grey(volume.array[k], window="lung", is_hu=volume.is_hu)
    rgb = (np.repeat(grey[..., None], 3, axis=-1) if grey.ndim == 2 else grey).astype(np.float32)
    for label, colour in LESION_COLORS.items():
        mask = lesion_labels[k] == label
        rgb[mask] = (1 - LESION_ALPHA) * rgb[mask] + LESION_ALPHA * np.asarray(colour, np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def lesion_rgba(lesion_slice: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 layer of one slice's lesion labels for the web viewer (transparent elsewhere)."""
    out = np.zeros((*lesion_slice.shape, 4), np.uint8)
    for label, colour in LESION_COLORS.items():
        mask = lesion_slice == label
        out[mask, :3] = colour
        out[mask, 3] = int(round(255 * LESION_ALPHA))
    return out


def measurements(section: dict[str, Any] | None) -> list[Measurement]:
    """The numbers a DICOM SR carries: volumes (ml), involvement (%), severity scores."""
    if not section or not section.get("available"):
        return []
    sides = ("right", "left", "total")
    out = [Measurement(f"{side} lung volume", section["lung_ml"][side], "ml") for side in sides]
    out += [Measurement("ground-glass volume", section["ggo_ml"], "ml"),
            Measurement("consolidation volume", section["consolidation_ml"], "ml")]
    out += [Measurement(f"{side} lung involvement", PERCENT * section["involvement"][side], "%")
            for side in sides]
    for name, zone in section["zones"].items():
        out.append(Measurement(f"{name} zone involvement", PERCENT * zone["involvement"], "%"))
        out.append(Measurement(f"{name} zone severity score", zone["score"], "{score}"))
    out.append(Measurement("CT severity score total", section["severity_total"], "{score}"))
    return out
