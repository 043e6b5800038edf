"""Where each model-space pixel came from: the geometry record a recipe returns with its tensor.

A recipe's forward transform (`Recipe.prepare_volume`) and its inverse (`Recipe.to_volume`) share
one record, `Geometry`, so every consumer (explain, the Predictor, the web viewer, DICOM key
images) maps model-space maps back onto the volume grid (z, y, x) the same way.

Two kinds of geometry:

- **slice-wise** (covidnet-ct2, ai-corona): model slice ``i`` is volume slice ``slices[i]``,
  cropped to ``boxes[i]`` (xmin, ymin, xmax, ymax; exclusive, volume pixels) and resized to the
  model size. The inverse resizes each map row back to its box and pastes it into its slice;
  other slices stay 0.
- **volumetric** (covidnet-3d, covidctnet): the volume was resized to ``grid`` (d, h, w) and
  ``boxes[0]`` was cropped from it (in grid pixels; it may extend past the grid where the recipe
  zero-padded). The inverse resizes the map to the box, pastes it into a zero grid and resizes the
  grid to the volume shape.

``flipped`` records a horizontal (x) flip applied after the rest (augmentation); the inverse undoes
it first. ``augmented`` marks geometry that random affine augmentation made non-invertible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from skimage.transform import resize

from covidct.errors import ConfigError, ShapeError

Box = tuple[int, int, int, int]
SLICEWISE, VOLUMETRIC = "slicewise", "volumetric"


def resize_map(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear (order 1, edge mode, no antialiasing) resize of a map to ``shape``, float32."""
    arr = np.asarray(arr, dtype=np.float32)
    if tuple(arr.shape) == tuple(shape):
        return arr
    return resize(arr, shape, order=1, mode="edge", anti_aliasing=False).astype(np.float32)


def _paste(patch: np.ndarray, box: Box, out: np.ndarray) -> None:
    """Resize ``patch`` (..., h, w) to ``box`` (x0, y0, x1, y1) and write the part inside ``out``'s
    last two axes (a box may extend past them where the forward transform zero-padded)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    full = resize_map(patch, (*patch.shape[:-2], y1 - y0, x1 - x0))
    h, w = out.shape[-2:]
    cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if cy1 > cy0 and cx1 > cx0:
        out[..., cy0:cy1, cx0:cx1] = full[..., cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


@dataclass(frozen=True)
class Geometry:
    """How one volume was mapped into model space (see the module doc).

    Attributes:
        kind: ``"slicewise"`` or ``"volumetric"``.
        volume_shape: (z, y, x) of the source volume.
        model_shape: spatial shape of the model-space map, (S, H, W) or (D, H, W).
        slices: slice-wise: volume slice index of each model slice; volumetric: empty.
        boxes: slice-wise: one crop box per model slice (volume pixels); volumetric: one box in
            ``grid`` pixels.
        grid: volumetric: the (d, h, w) shape the volume was resized to before cropping.
        flipped: a horizontal flip was applied last (augmentation).
        augmented: random affine augmentation was applied; the map cannot be put back.
    """

    kind: str
    volume_shape: tuple[int, int, int]
    model_shape: tuple[int, ...]
    slices: tuple[int, ...] = ()
    boxes: tuple[Box, ...] = ()
    grid: tuple[int, int, int] | None = None
    flipped: bool = False
    augmented: bool = False

    def with_flip(self, flipped: bool) -> Geometry:
        """The same geometry with ``flipped`` set."""
        return Geometry(self.kind, self.volume_shape, self.model_shape, self.slices, self.boxes,
                        self.grid, flipped, self.augmented)

    def to_volume(self, heat: np.ndarray, *, rows: list[int] | tuple[int, ...] | None = None) -> np.ndarray:
        """Map a model-space map back onto the volume grid: float32 (z, y, x), 0 where not covered.

        Args:
            heat: slice-wise: (R, h, w), one row per model slice in ``rows`` (default: all model
                slices); volumetric: (d, h, w) at any resolution (resized to the crop box).
            rows: slice-wise only: which model slices the rows of ``heat`` are.
        """
        heat = np.asarray(heat, dtype=np.float32)
        if self.augmented:
            raise ConfigError("This input was prepared with random affine augmentation; its maps cannot be "
                              "mapped back. Prepare without an rng to explain or display it.")
        if heat.ndim != 3:
            raise ShapeError(f"A model-space map must be 3D (rows or depth, h, w), got shape {heat.shape}.")
        if self.flipped:
            heat = heat[..., ::-1]
        if self.kind == SLICEWISE:
            return self._slices_to_volume(heat, rows)
        return self._grid_to_volume(heat)

    def _slices_to_volume(self, heat: np.ndarray, rows: list[int] | tuple[int, ...] | None) -> np.ndarray:
        rows = list(range(len(self.slices))) if rows is None else [int(r) for r in rows]
        if len(rows) != heat.shape[0]:
            raise ShapeError(f"The map has {heat.shape[0]} rows but {len(rows)} model slices were named.")
        out = np.zeros(self.volume_shape, np.float32)
        for row, r in zip(heat, rows, strict=True):
            if not 0 <= r < len(self.slices):
                raise ShapeError(f"Model slice {r} is outside 0..{len(self.slices) - 1}.")
            _paste(row, self.boxes[r], out[self.slices[r]])
        return out

    def _grid_to_volume(self, heat: np.ndarray) -> np.ndarray:
        assert self.grid is not None
        grid = np.zeros(self.grid, np.float32)
        x0, y0, x1, y1 = self.boxes[0]
        _paste(resize_map(heat, (self.grid[0], *heat.shape[1:])), (x0, y0, x1, y1), grid)
        return resize_map(grid, self.volume_shape)

    def model_slice_of(self, volume_slice: int) -> int | None:
        """Slice-wise: the model slice made from ``volume_slice`` (None when it was not used)."""
        try:
            return self.slices.index(int(volume_slice))
        except ValueError:
            return None


class Prepared(NamedTuple):
    """A recipe's output: the model input ``array`` and the ``geometry`` that maps back."""

    array: np.ndarray
    geometry: Geometry

    def take(self, volume_slices: Sequence[int]) -> Prepared:
        """Slice-wise: the rows made from these volume slices (in the order given), with their
        geometry; channels that share one image (a broadcast view) still share it, so nothing is
        copied 3 times. A slice that was not prepared is a `ShapeError`."""
        if self.geometry.kind != SLICEWISE:
            raise ShapeError("Only a slice-wise preparation has rows to take.")
        rows = [self.geometry.model_slice_of(s) for s in volume_slices]
        if None in rows:
            raise ShapeError(f"Slices {list(volume_slices)} were not all prepared "
                             f"(prepared: {list(self.geometry.slices)}).")
        array = np.asarray(self.array)
        if array.ndim >= 2 and array.shape[1] > 1 and array.strides[1] == 0:  # one image, C views
            array = np.broadcast_to(array[:, :1][rows], (len(rows), *array.shape[1:]))
        else:
            array = array[rows]
        g = self.geometry
        geometry = dataclasses.replace(g, model_shape=(len(rows), *g.model_shape[1:]),
                                       slices=tuple(g.slices[r] for r in rows),
                                       boxes=tuple(g.boxes[r] for r in rows))
        return Prepared(array, geometry)


def slicewise(volume_shape: tuple[int, ...], model_shape: tuple[int, ...], slices: list[int] | range,
              boxes: list[Box]) -> Geometry:
    """Geometry of a slice-wise recipe (one crop box per model slice)."""
    return Geometry(SLICEWISE, tuple(int(v) for v in volume_shape), tuple(int(v) for v in model_shape),
                    tuple(int(s) for s in slices), tuple(tuple(int(v) for v in b) for b in boxes))


def volumetric(volume_shape: tuple[int, ...], model_shape: tuple[int, ...], grid: tuple[int, int, int],
               box: Box | None = None) -> Geometry:
    """Geometry of a 3D recipe: resized to ``grid``, then ``box`` (default: the whole grid) cut out."""
    box = (0, 0, grid[2], grid[1]) if box is None else box
    return Geometry(VOLUMETRIC, tuple(int(v) for v in volume_shape), tuple(int(v) for v in model_shape),
                    boxes=(tuple(int(v) for v in box),), grid=tuple(int(v) for v in grid))
