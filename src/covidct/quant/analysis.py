"""Quantitative CT from Hounsfield units alone: the default analysis of every HU chest CT.

`analyse_ct(volume)` segments the lungs (`lungs`), the ground glass and consolidation inside them
(`lesions`) and scores them (`severity`), on an *analysis grid*: the volume averaged in-plane in
blocks of ``factor`` x ``factor`` pixels so pixels are about `ANALYSIS_PIXEL_MM` (a 512x512 scan at
0.6-0.8 mm becomes 256x256 at 1.2-1.5 mm; slices are kept). Masks come back on the volume's grid
through `CTAnalysis.lesion_labels` / `lung_labels_full`.

No trained weights are involved. It needs HU: 8-bit (PNG/JPG) input raises `QuantError`, and
callers that want a report anyway use `analysis_unavailable(volume)`.

`analyse_ct` is the only producer of lung, lesion, zone and periphery numbers: the service's report
section, the explanation's lung summary (`covidct.explain`) and the SR measurements all read one
`CTAnalysis` per study.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from covidct.errors import QuantError
from covidct.io.volume import Volume
from covidct.quant.lesions import LesionMasks, LesionParams, segment_lesions
from covidct.quant.lungs import AIR_THRESHOLD_HU, IN_PLANE_8, bounding_box, segment_lungs
from covidct.quant.regions import LungRegions, Quantification, z_runs_inferior_first
from covidct.quant.severity import SeverityReport, score_scan

ANALYSIS_PIXEL_MM = 1.4
"""Target in-plane pixel size of the analysis grid; the block factor is round(1.4 / pixel), >= 1."""
LESION_BACKGROUND, LESION_GGO, LESION_CONSOLIDATION = 0, 1, 2
LESION_NAMES = {LESION_GGO: "ground glass", LESION_CONSOLIDATION: "consolidation"}
METHOD = (
    "HU rule without trained weights: lungs by threshold and components; ground glass -700..-300 HU and "
    "consolidation -300..+100 HU after a grey opening (6x7x7 mm box) that removes vessels, airway walls "
    "and the pleural/diaphragmatic rim, hilar region (15 mm from the mediastinum) excluded, round solid "
    "nodules (compact round opacities up to 3 cm with a solid core) excluded"
)
HU_RULE_SOURCE = "hu-rule"
MIN_SLICES = 3
"""Fewer slices than this (a single image, a pair) are refused: zones are thirds of each lung's extent."""
MIN_ZONE_SLICES = 9
"""With lungs on fewer slices than this (three per zone), the zones and severity scores carry a warning."""
SPACING_WARNINGS = ("gap of", "unequal slice spacing")
"""Starts of the reader's warnings (`covidct.io`) about uneven slice positions."""
SLICE_MIN_AREA_MM2 = 0.0
"""2D lesion components (per slice) smaller than this area do not count in a slice's score (0 = all)."""
SLICE_Z_WINDOW = 5
"""A slice's score is the mean of this many neighbouring slices' lesion fractions (odd; 1 = own slice).
5 (10 mm on the 2 mm labelled series) was chosen by every search of benchmarks/quant_validation.py and
raised the held-out slice AUC on both labelled series (docs/results.md)."""


@dataclass(frozen=True)
class SliceScoreParams:
    """How a slice's score (`CTAnalysis.slice_score`) is defined; defaults chosen by
    ``benchmarks/quant_validation.py``.

    Attributes:
        min_area_mm2: 2D lesion components below this area (mm^2) are not counted.
        z_window: odd number of neighbouring slices averaged (1 = the slice alone).
    """

    min_area_mm2: float = SLICE_MIN_AREA_MM2
    z_window: int = SLICE_Z_WINDOW


@dataclass(frozen=True)
class QuantParams:
    """All tunables of `analyse_ct`: lesion segmentation and the per-slice score."""

    lesions: LesionParams = LesionParams()
    slice_score: SliceScoreParams = SliceScoreParams()


@dataclass
class CTAnalysis:
    """Result of `analyse_ct`: masks on the analysis grid and the scores.

    Attributes:
        factor: in-plane block size of the analysis grid (1 = the volume's own grid).
        shape: (z, y, x) of the source volume.
        regions: `LungRegions` on the analysis grid (lung labels 1 right / 2 left, zones, periphery,
            spacing).
        lesions: `LesionMasks` on the analysis grid.
        report: the `SeverityReport`.
        slice_involvement: (z,) lesion / lung area per slice, 0 where a slice has no lung.
        slice_score: (z,) the per-slice score that ranks slices for infection (`slice_scores` with
            `SliceScoreParams`: the slice involvement averaged over neighbouring slices).
        warnings: what limits these numbers for this scan (slice gaps, few lung slices), in words.
    """

    factor: int
    shape: tuple[int, int, int]
    regions: LungRegions
    lesions: LesionMasks
    report: SeverityReport
    slice_involvement: np.ndarray
    slice_score: np.ndarray
    warnings: list[str] = field(default_factory=list)
    source_hu: np.ndarray | None = field(default=None, repr=False)
    """The volume's own HU array (z, y, x), a reference, for `lung_labels_full`'s boundary refinement;
    None gives the analysis-grid labels repeated."""
    _lung_full: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(z, y, x) mm of the analysis grid."""
        return self.regions.spacing

    @property
    def lung_labels(self) -> np.ndarray:
        """uint8 (z, y', x') lung labels on the analysis grid, 1 right / 2 left lung."""
        return self.regions.labels

    def to_analysis_grid(self, values: np.ndarray) -> np.ndarray:
        """A (z, y, x) float map on the volume's grid averaged onto the analysis grid (z, y', x')."""
        return block_mean_array(values, self.factor)

    def lesion_quantification(self) -> Quantification:
        """The lesions' share per lung, zone (both lungs' thirds) and central vs peripheral."""
        quant = self.regions.quantify(self.lesions.any, HU_RULE_SOURCE)
        quant.ggo_ml, quant.consolidation_ml = self.report.ggo_ml, self.report.consolidation_ml
        return quant

    def lung_volume_ml(self) -> dict[str, float]:
        """Lung volumes in ml (total, right, left), rounded to 0.1 ml."""
        return {k: round(self.report.lung_ml[k], 1) for k in ("total", "right", "left")}

    def _to_volume_grid(self, grid: np.ndarray) -> np.ndarray:
        """Nearest-neighbour (z, y', x') -> (z, y, x): repeat blocks, pad the cut-off edge with 0."""
        if self.factor == 1:
            return grid
        big = np.repeat(np.repeat(grid, self.factor, axis=1), self.factor, axis=2)
        out = np.zeros(self.shape, grid.dtype)
        out[:, : big.shape[1], : big.shape[2]] = big
        return out

    def lesion_labels(self) -> np.ndarray:
        """uint8 (z, y, x) on the volume's grid: 0 none, 1 ground glass, 2 consolidation."""
        grid = self.lesions.ggo.astype(np.uint8) * LESION_GGO
        grid[self.lesions.consolidation] = LESION_CONSOLIDATION
        return self._to_volume_grid(grid)

    def lung_labels_full(self) -> np.ndarray:
        """uint8 (z, y, x) lung labels on the volume's grid (1 right, 2 left), computed once.

        With `source_hu`, the boundary is redrawn at the volume's resolution (`refine_lung_boundary`):
        the analysis-grid blocks on either side of the lung boundary take their pixels' own HU, so the
        outline follows the pleura pixel by pixel instead of in ``factor`` x ``factor`` steps."""
        if self._lung_full is None:
            full = self._to_volume_grid(self.lung_labels)
            if self.source_hu is not None and self.factor > 1:
                refine_lung_boundary(full, self.lung_labels, self.source_hu, self.factor)
            self._lung_full = full
        return self._lung_full

    def to_dict(self) -> dict:
        """JSON-ready report: scores, method, grid and per-slice involvement."""
        return {
            "method": METHOD,
            **self.report.to_dict(),
            "summary": self.report.summary(),
            "slice_involvement": [round(float(v), 5) for v in self.slice_involvement],
            "slice_score": [round(float(v), 5) for v in self.slice_score],
            "analysis_grid": {"factor": self.factor, "spacing_mm": [round(s, 4) for s in self.spacing]},
            "warnings": list(self.warnings),
        }


def lung_boundary_blocks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analysis-grid blocks (z, y', x') on either side of a lung boundary: lung blocks with a 4-neighbour
    of another label, and non-lung blocks next to a lung. Returns (bool mask of those blocks, uint8
    label each would take: its own for lung blocks, a neighbouring lung's for the others)."""
    neighbour_max = labels.copy()
    neighbour_min = labels.copy()
    for axis in (1, 2):  # in-plane 4-neighbours: y and x, both ways
        for src_part, dst_part in ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))):
            src, dst = [slice(None)] * 3, [slice(None)] * 3
            src[axis], dst[axis] = src_part, dst_part
            np.maximum(neighbour_max[tuple(dst)], labels[tuple(src)], out=neighbour_max[tuple(dst)])
            np.minimum(neighbour_min[tuple(dst)], labels[tuple(src)], out=neighbour_min[tuple(dst)])
    lung = labels > 0
    boundary = (lung & (neighbour_min != labels)) | (~lung & (neighbour_max > 0))
    return boundary, np.where(lung, labels, neighbour_max).astype(np.uint8)


def refine_lung_boundary(full: np.ndarray, labels: np.ndarray, hu: np.ndarray, factor: int,
                         air_hu: float = AIR_THRESHOLD_HU) -> None:
    """Redraw, in place, the lung boundary of ``full`` (uint8 (z, y, x), ``labels`` repeated
    ``factor`` x ``factor``) at the volume's resolution.

    Only the analysis-grid blocks on either side of the boundary change: a pixel there is lung (with
    its block's label, or a neighbouring lung's for a block outside) when its own HU is below
    ``air_hu`` (aerated lung), and a lung block whose mean HU is not below ``air_hu`` (dense lesion
    that the lung closing joined to the lung) keeps all its pixels. Interior blocks are untouched,
    so vessels and lesions inside the lung stay lung.

    Args:
        full: uint8 (z, y, x) on the volume's grid, modified in place.
        labels: uint8 (z, y', x') analysis-grid labels (y' = y // factor, x' = x // factor).
        hu: (z, y, x) HU of the volume.
        factor: in-plane block size.
        air_hu: the lung threshold (`covidct.quant.lungs.AIR_THRESHOLD_HU`).
    """
    if not labels.any():
        return
    box = bounding_box(labels > 0, pad=1)  # the boundary blocks lie in the lungs' box grown by one
    boundary, candidate = lung_boundary_blocks(labels[box])
    bz, by, bx = np.nonzero(boundary)
    label_of = candidate[bz, by, bx]
    bz, by, bx = bz + box[0].start, by + box[1].start, bx + box[2].start
    z, yb, xb = labels.shape
    region = full[:, : yb * factor, : xb * factor]
    blocks = region.reshape(z, yb, factor, xb, factor)  # a view when the grid divides the image
    pixel_hu = np.asarray(hu[:, : yb * factor, : xb * factor], np.float32).reshape(
        z, yb, factor, xb, factor)[bz, by, :, bx, :]  # (n, factor, factor)
    dense_lung = (labels[bz, by, bx] > 0) & (pixel_hu.mean(axis=(1, 2)) >= air_hu)
    keep = (pixel_hu < air_hu) | dense_lung[:, None, None]
    blocks[bz, by, :, bx, :] = np.where(keep, label_of[:, None, None], 0).astype(np.uint8)
    if not np.shares_memory(blocks, full):
        region[...] = blocks.reshape(region.shape)


def grid_factor(volume: Volume) -> int:
    """In-plane block factor that brings the pixel size closest to `ANALYSIS_PIXEL_MM` (>= 1)."""
    pixel = min(float(volume.spacing[1]), float(volume.spacing[2]))
    return max(1, int(round(ANALYSIS_PIXEL_MM / pixel)))


BLOCK_MEAN_CHUNK = 8
"""Slices averaged per step in `block_mean_array`: small temporaries (~8 MB at 512 px) that the
allocator reuses instead of mapping fresh pages for a whole-volume temporary on every call."""


def block_mean_array(values: np.ndarray, factor: int) -> np.ndarray:
    """(z, y, x) -> float32 (z, y // factor, x // factor): mean over ``factor`` x ``factor`` in-plane
    blocks (edge rows/columns that do not fill a block are dropped).

    Rows of a block are summed first (contiguous reads), then columns, `BLOCK_MEAN_CHUNK` slices at a
    time: ~25 % faster than summing the ``factor**2`` strided views, themselves 6x faster than a
    reshaped mean at 512 px; the same values for integer HU, up to float32 rounding otherwise."""
    values = np.asarray(values, np.float32)
    if factor == 1:
        return values
    z, y, x = values.shape
    yb, xb = y // factor, x // factor
    out = np.empty((z, yb, xb), np.float32)
    for z0 in range(0, z, BLOCK_MEAN_CHUNK):
        chunk = values[z0 : z0 + BLOCK_MEAN_CHUNK]
        rows = chunk[:, 0 : yb * factor : factor, : xb * factor].copy()
        for dy in range(1, factor):
            rows += chunk[:, dy : yb * factor : factor, : xb * factor]
        sums = rows[:, :, 0::factor].copy()
        for dx in range(1, factor):
            sums += rows[:, :, dx::factor]
        out[z0 : z0 + BLOCK_MEAN_CHUNK] = sums / np.float32(factor * factor)
    return out


def block_mean(volume: Volume, factor: int) -> Volume:
    """The volume averaged over ``factor`` x ``factor`` in-plane blocks (`block_mean_array`). Same
    slices, direction and metadata; spacing scaled."""
    if factor == 1:
        return volume
    sz, sy, sx = (float(s) for s in volume.spacing)
    return Volume(block_mean_array(volume.array, factor), (sz, sy * factor, sx * factor),
                  origin=volume.origin, direction=volume.direction, is_hu=volume.is_hu, meta=volume.meta)


def _drop_small_2d(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove in-plane (8-connected) components of a (z, y, x) bool mask with fewer than ``min_pixels``."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, _ = ndi.label(mask, IN_PLANE_8)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def slice_scores(lung_labels: np.ndarray, lesion: np.ndarray, spacing: tuple[float, float, float],
                 params: SliceScoreParams | None = None) -> np.ndarray:
    """(z,) per-slice score: lesion area / lung area (0 without lung), after dropping 2D lesion
    components below ``params.min_area_mm2``, averaged over ``params.z_window`` neighbouring slices.

    Args:
        lung_labels: (z, y, x) lung labels (> 0 lung).
        lesion: (z, y, x) bool lesion mask, same grid.
        spacing: (z, y, x) mm of the grid.
        params: `SliceScoreParams` (default: the chosen values).

    Raises:
        QuantError: ``z_window`` not a positive odd number.
    """
    params = SliceScoreParams() if params is None else params
    if params.z_window < 1 or params.z_window % 2 == 0:
        raise QuantError(f"z_window must be a positive odd number of slices, got {params.z_window}.")
    z = lung_labels.shape[0]
    min_pixels = int(np.ceil(params.min_area_mm2 / (float(spacing[1]) * float(spacing[2]))))
    counted = _drop_small_2d(lesion & (lung_labels > 0), min_pixels)
    lung_area = np.count_nonzero(lung_labels.reshape(z, -1), axis=1)
    lesion_area = np.count_nonzero(counted.reshape(z, -1), axis=1)
    per_slice = np.where(lung_area > 0, lesion_area / np.maximum(lung_area, 1), 0.0)
    if params.z_window == 1:
        return per_slice
    return ndi.uniform_filter1d(per_slice, params.z_window, mode="nearest")


@dataclass(frozen=True)
class LungGrid:
    """The lungs of one scan on the analysis grid: the first step of `analyse_ct`, available on its
    own so that a caller can use the lungs (e.g. to pick the slices a model scores) while the rest of
    the analysis runs.

    Attributes:
        factor: in-plane block size of the analysis grid (`grid_factor`).
        grid: the HU volume averaged onto the analysis grid (z, y', x').
        labels: uint8 (z, y', x') lung labels, 1 right / 2 left (`segment_lungs`).
    """

    factor: int
    grid: Volume
    labels: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(z, y, x) mm of the analysis grid."""
        return tuple(float(s) for s in self.grid.spacing)  # type: ignore[return-value]


def check_analysable(volume: Volume) -> None:
    """Raise `QuantError` when ``volume`` cannot be analysed: 8-bit grey values, or fewer than
    `MIN_SLICES` slices."""
    if not volume.is_hu:
        raise QuantError(
            f"Quantitative CT needs Hounsfield units, but {volume.meta.source} holds 8-bit grey values "
            "(PNG/JPG or windowed screenshots). Give the DICOM series or a NIfTI in HU."
        )
    if volume.num_slices < MIN_SLICES:
        raise QuantError(
            f"Quantitative CT needs a series of at least {MIN_SLICES} slices through the chest, but "
            f"{volume.meta.source} has {volume.num_slices}. Give the whole chest series, not single images."
        )


def find_lungs(volume: Volume) -> LungGrid:
    """The lungs of one HU chest CT on the analysis grid (the first step of `analyse_ct`).

    Raises:
        QuantError: as `analyse_ct` (8-bit input, too few slices, no lungs or no chest found, no
            left-right image axis).
    """
    check_analysable(volume)
    factor = grid_factor(volume)
    small = block_mean(volume, factor)
    return LungGrid(factor, small, segment_lungs(small))


def analyse_ct(volume: Volume, params: QuantParams | None = None, *, lungs: LungGrid | None = None
               ) -> CTAnalysis:
    """Lungs, lesions and scores of one HU chest CT.

    Args:
        volume: HU `Volume` (z, y, x).
        params: the tunables (default `QuantParams()`: the values chosen in docs/results.md).
        lungs: ``find_lungs(volume)`` when the caller already has it (not computed again).

    Returns:
        `CTAnalysis` (masks on the analysis grid, `SeverityReport`, per-slice involvement).

    Raises:
        QuantError: 8-bit input, fewer than `MIN_SLICES` slices, no lungs or no chest found
            (`LungNotFoundError`), or no left-right image axis.
    """
    if lungs is None:
        lungs = find_lungs(volume)  # checks the volume first
    else:
        check_analysable(volume)
    params = QuantParams() if params is None else params
    factor, small, labels = lungs.factor, lungs.grid, lungs.labels
    lesions = segment_lesions(small, labels, params.lesions)
    regions = LungRegions.of(labels, small.spacing, inferior_first=z_runs_inferior_first(volume.direction))
    report = score_scan(regions, lesions.ggo, lesions.consolidation)
    per_slice = slice_scores(labels, lesions.any, small.spacing, SliceScoreParams(0.0, 1))
    score = slice_scores(labels, lesions.any, small.spacing, params.slice_score)
    lung_slices = int(np.count_nonzero(labels.reshape(labels.shape[0], -1).any(axis=1)))
    return CTAnalysis(factor, volume.shape, regions, lesions, report, per_slice, score,
                      scan_warnings(volume, lung_slices), source_hu=volume.array)


def scan_warnings(volume: Volume, lung_slices: int) -> list[str]:
    """What limits the analysis of this scan: uneven slice positions (from the reader's warnings) and
    lungs on fewer than `MIN_ZONE_SLICES` slices."""
    out = []
    uneven = [w for w in volume.meta.warnings if w.startswith(SPACING_WARNINGS)]
    if uneven:
        out.append(f"slice positions are uneven ({uneven[0]}{'; ...' if len(uneven) > 1 else ''}): lung "
                   "and lesion volumes and the zones assume even spacing and are approximate")
    if lung_slices < MIN_ZONE_SLICES:
        out.append(f"lungs on only {lung_slices} slices: the upper/middle/lower zones and the severity "
                   "score need the whole chest and are not meaningful here")
    return out


def analysis_unavailable(volume: Volume) -> dict:
    """The report's quantitative section when the input is not in HU (JSON-ready)."""
    return {
        "available": False,
        "reason": f"not available: {volume.meta.source} holds 8-bit grey values, not Hounsfield units; "
                  "quantitative CT needs the DICOM series or a NIfTI in HU",
    }
