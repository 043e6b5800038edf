"""Each paper's preprocessing as a named, declarative recipe (a frozen dataclass).

Train, evaluate and predict call the same recipe; checkpoints store ``recipe.to_dict()`` and
rebuild it with `recipe_from_dict`. All outputs are numpy float32.

``prepare_volume`` returns a `Prepared` (``array``, ``geometry``): the model input and the record of
where each of its pixels came from; ``recipe.to_volume(map, geometry)`` is the one inverse that puts a
model-space map (heatmap) back onto the volume grid (z, y, x).

Per recipe: ``prepare_volume`` array; what HU input gets; what 8-bit input (``is_hu`` False) gets.

- covidnet-ct2 (slice): (S, 3, size, size) in [0, 1]. HU: lung window -600/1500 -> 0..255.
  8-bit: values used as already windowed (clipped to 0..255).
- ai-corona (scan): (S_mid, 3, size, size), ImageNet-normalised. HU and 8-bit: top 0.5% clip,
  scale to 0..255 (the same steps on either).
- covidnet-3d (scan): (1, depth, crop, crop) in [0, 1]. HU: clip [-1024, 1024] -> [0, 1].
  8-bit: grey / 255.
- covidctnet (scan): (1, depth, size, size) in [0, 1]. HU: 1 mm resampling, [-1000, 400] -> [0, 1].
  8-bit: grey / 255, resampled with the volume's spacing.
- covidctnet-released (scan): (1, 50, 128, 128) in [0, 1], exactly as the CovidCTNet authors' released
  code prepares a scan for their released classifier (see `CovidCTNetReleasedRecipe`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from covidct.errors import ConfigError, ShapeError, UnknownNameError, unknown_name_message
from covidct.io.volume import Volume
from covidct.preprocessing.augment import CovidNetCTAugment, ScannerAugment
from covidct.preprocessing.geometry import Geometry, Prepared, slicewise, volumetric
from covidct.preprocessing.lung_intensity import LungFocus
from covidct.preprocessing.transforms import (
    UINT8_MAX,
    BodyBox,
    Box,
    CenterCrop,
    CropToBox,
    HUClip,
    ImageNetNormalize,
    LungBox,
    LungWindow,
    MiddleSlices,
    Resize2D,
    ResizeDepth,
    ScaleTo255,
    ToChannels,
    TopPercentileClip,
    crop_resize_slice,
    map_slices,
    union_box,
)
from covidct.preprocessing.window import LUNG_WINDOW

BOX_MODES = ("slice", "volume", "none", "lung")


def _grey8(image: np.ndarray) -> np.ndarray:
    """8-bit inputs are used as they are (already windowed), clipped to [0, 255]."""
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, UINT8_MAX)


def _stack(volume: Volume) -> np.ndarray:
    arr = np.asarray(volume.array, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ShapeError(f"Expected a volume (z, y, x) with at least one slice, got shape {arr.shape}.")
    return arr


def _slice_indices(slices: Sequence[int], n: int) -> list[int]:
    """``slices`` as sorted, distinct volume slice indices in 0..n-1 (a `ShapeError` otherwise)."""
    chosen = sorted({int(s) for s in slices})
    if not chosen or chosen[0] < 0 or chosen[-1] >= n:
        raise ShapeError(f"slices must be a non-empty set of indices in 0..{n - 1}, got {list(slices)[:8]}.")
    return chosen


def _flip_maybe(x: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, bool]:
    """Horizontal flip of the last axis with probability 0.5 when ``rng`` is given; (array, flipped)."""
    if rng is not None and rng.random() < 0.5:
        return np.ascontiguousarray(x[..., ::-1]), True
    return x, False


@dataclass(frozen=True)
class Recipe:
    """Base recipe: a frozen, JSON-able set of parameters plus the functions that use them."""

    name: ClassVar[str] = ""
    unit: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # JSON gives lists; keep tuples so round trips compare equal
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            is_count = f.name in ("size", "depth", "resize_to", "crop")
            if is_count and (not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"Recipe {self.name!r}: {f.name} must be a positive integer, got {value!r}.")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input, without the batch axis."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """{'name', 'unit', **parameters}, JSON-able; `recipe_from_dict` inverts it."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"name": self.name, "unit": self.unit,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}

    def prepare_volume(self, volume: Volume, *, rng: np.random.Generator | None = None) -> Prepared:
        """The model input for ``volume`` and its `Geometry`; random augmentation iff ``rng``."""
        raise NotImplementedError

    def to_volume(self, heat: np.ndarray, geometry: Geometry, *,
                  rows: list[int] | tuple[int, ...] | None = None) -> np.ndarray:
        """The inverse of `prepare_volume`: a model-space map -> float32 (z, y, x) on the volume grid.

        ``heat`` is (R, h, w) for slice recipes (``rows``: which model slices, default all) and
        (d, h, w) at any resolution for scan recipes; see `covidct.preprocessing.geometry`.
        """
        return geometry.to_volume(heat, rows=rows)

    def prepare_image(self, image: np.ndarray, *, is_hu: bool, box: Box | None = None,
                      rng: np.random.Generator | None = None) -> np.ndarray:
        raise ConfigError(f"Recipe {self.name!r} works on whole scans; call prepare_volume(volume).")


@dataclass(frozen=True)
class CovidNetCT2Recipe(Recipe):
    """COVID-Net CT-2: lung window -> body box crop -> 3 channels -> /255 -> bilinear resize.

    ``box_mode``: 'slice' (one body box per slice, as COVIDx CT), 'volume' (the union of the
    slices' boxes, same crop for all slices), 'none' (whole image) or 'lung' (`LungBox`: the
    lungs' box per slice, body box when no lungs are found). Augmentation (`CovidNetCTAugment`)
    runs iff ``prepare_image`` gets an ``rng``; with ``scanner_augment`` the seeded scanner changes
    (`ScannerAugment`: gamma, contrast, blur, noise, JPEG, resolution) run first.
    ``standardise`` / ``mask_outside_lungs`` (`LungFocus`, after the scanner changes and before the
    box): per-image intensity standardisation on the lungs' own parenchyma and soft tissue, and
    everything outside the lungs set to air, so the body box becomes the lungs' box.
    """

    name: ClassVar[str] = "covidnet-ct2"
    unit: ClassVar[str] = "slice"
    size: int = 512
    window_center: float = LUNG_WINDOW.center
    window_width: float = LUNG_WINDOW.width
    box_mode: str = "slice"
    antialias: bool = True
    scanner_augment: bool = False
    standardise: bool = False
    mask_outside_lungs: bool = False
    focus_window: tuple[float, float] | None = None
    """(center, width) HU in which a standardised slice is shown to the model; None: the recipe's window.
    A narrow window (e.g. -500/500) shows normal parenchyma (-850 HU) black whatever the export's noise."""

    def _validate(self) -> None:
        super()._validate()
        if self.box_mode not in BOX_MODES:
            raise ConfigError(f"box_mode must be one of {BOX_MODES}, got {self.box_mode!r}.")
        if self.focus_window is not None:
            if not self.standardise or len(self.focus_window) != 2 or float(self.focus_window[1]) <= 0:
                raise ConfigError(
                    f"focus_window {self.focus_window!r} needs standardise: true and is "
                    "[center, width > 0] in HU."
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def to_uint8(self, image: np.ndarray, *, is_hu: bool) -> np.ndarray:
        """HU -> lung-windowed grey values 0..255 (float32); 8-bit input clipped to 0..255."""
        if is_hu:
            return LungWindow(self.window_center, self.window_width)(image)
        return _grey8(image)

    def focus(self, grey: np.ndarray) -> np.ndarray:
        """`LungFocus` of one grey slice (H, W) or a stack (S, H, W), per slice; as it is when off."""
        if not (self.standardise or self.mask_outside_lungs):
            return grey
        window = self.focus_window or (self.window_center, self.window_width)
        focus = LungFocus(standardise=self.standardise, mask=self.mask_outside_lungs,
                          window=(float(window[0]), float(window[1])))
        if grey.ndim == 2:
            return focus(grey)
        return np.stack([focus(s) for s in grey]) if len(grey) else grey

    def body_box(self, grey: np.ndarray) -> Box:
        """Body box (xmin, ymin, xmax, ymax), exclusive, of one grey slice."""
        if self.box_mode == "none":
            return (0, 0, int(grey.shape[-1]), int(grey.shape[-2]))
        if self.box_mode == "lung":
            return LungBox()(grey)
        return BodyBox()(grey)

    def volume_boxes(self, grey_stack: np.ndarray) -> list[Box]:
        """One box per slice of a (S, H, W) grey stack, following ``box_mode``; the slices are
        spread over ``torch.get_num_threads()`` threads."""
        boxes = map_slices(self.body_box, grey_stack, torch.get_num_threads())
        if self.box_mode == "volume":
            boxes = [union_box(boxes)] * len(boxes)
        return boxes

    def prepare_image(self, image: np.ndarray, *, is_hu: bool, box: Box | None = None,
                      rng: np.random.Generator | None = None) -> np.ndarray:
        """One slice (H, W) -> (3, size, size) float32 in [0, 1]; augmented iff ``rng`` is given."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ShapeError(f"prepare_image expects one 2D slice (H, W), got shape {image.shape}.")
        grey = self.to_uint8(image, is_hu=is_hu)
        if rng is not None and self.scanner_augment:
            grey = ScannerAugment(rng)(grey)
        grey = self.focus(grey)
        box = self.body_box(grey) if box is None else tuple(int(v) for v in box)
        if rng is not None:
            return CovidNetCTAugment(rng, size=self.size, antialias=self.antialias)(grey, box)
        crop = CropToBox()(grey, box)
        return Resize2D(self.size, antialias=self.antialias)(ToChannels(3)(crop) / UINT8_MAX)

    def prepare_volume(self, volume: Volume, *, rng: np.random.Generator | None = None,
                       slices: Sequence[int] | None = None) -> Prepared:
        """The slices (all, or the volume slice indices ``slices``, e.g. the ones showing lung) ->
        (K, 3, size, size) float32 in [0, 1], each cropped to its body box; the geometry's
        ``slices`` say which volume slice each model row is.

        Without ``rng`` each chosen slice goes window -> box -> crop -> resize on its own, the
        slices spread over ``torch.get_num_threads()`` threads (the numbers of `prepare_image`), and
        the 3 channels are one grey image (a read-only broadcast view). "volume" boxes are the union
        over every slice of the volume, chosen or not.
        """
        hu = _stack(volume)
        chosen = list(range(len(hu))) if slices is None else _slice_indices(slices, len(hu))
        if rng is not None:
            return self._prepare_augmented(hu[chosen], hu.shape, chosen, volume.is_hu, rng)
        threads = torch.get_num_threads()
        union = None
        if self.box_mode == "volume":  # the union of every slice's box, chosen or not
            union = union_box(map_slices(lambda s: self.body_box(self._grey(s, volume.is_hu)), hu, threads))
        resized = np.empty((len(chosen), self.size, self.size), dtype=np.float32)

        def prepare_row(k: int) -> Box:
            grey = self._grey(hu[chosen[k]], volume.is_hu)
            box = CropToBox.clip(union or self.body_box(grey), grey.shape)
            resized[k] = crop_resize_slice(grey, box, self.size, antialias=self.antialias)
            return box

        boxes = map_slices(prepare_row, range(len(chosen)), threads)
        array = np.broadcast_to(resized[:, None], (len(chosen), 3, self.size, self.size))
        return Prepared(array, slicewise(hu.shape, (len(chosen), self.size, self.size), chosen, boxes))

    def _grey(self, image: np.ndarray, is_hu: bool) -> np.ndarray:
        """One slice as the model's grey image: window (HU) or clip (8-bit), then `focus`."""
        return self.focus(self.to_uint8(image, is_hu=is_hu))

    def _prepare_augmented(self, hu: np.ndarray, volume_shape: tuple[int, ...], chosen: list[int],
                           is_hu: bool, rng: np.random.Generator) -> Prepared:
        """Training: the chosen (K, H, W) slices, each augmented on its own (not invertible)."""
        grey = self.focus(self.to_uint8(hu, is_hu=is_hu))
        boxes = [CropToBox.clip(b, grey.shape[1:]) for b in self.volume_boxes(grey)]
        array = np.stack([self.prepare_image(s, is_hu=False, box=b, rng=rng)
                          for s, b in zip(grey, boxes, strict=True)]).astype(np.float32)
        geometry = slicewise(volume_shape, (len(grey), self.size, self.size), chosen, boxes)
        return Prepared(array, dataclasses.replace(geometry, augmented=True))


@dataclass(frozen=True)
class AiCoronaRecipe(Recipe):
    """ai-corona: middle 50% of slices; per slice clip the top 0.5% of intensities, scale to
    [0, 255], bilinear resize, 3 channels, ImageNet mean/std. The same steps apply to HU and to
    8-bit input. With an ``rng``, slices are flipped horizontally with probability 0.5."""

    name: ClassVar[str] = "ai-corona"
    unit: ClassVar[str] = "scan"
    size: int = 512
    fraction: float = 0.5
    top_percent: float = 0.5
    antialias: bool = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per slice; a scan input is (S_mid, 3, size, size)."""
        return (3, self.size, self.size)

    def prepare_image(self, image: np.ndarray, *, is_hu: bool = True, box: Box | None = None,
                      rng: np.random.Generator | None = None) -> np.ndarray:
        """One slice (H, W) -> (3, size, size) ImageNet-normalised float32."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ShapeError(f"prepare_image expects one 2D slice (H, W), got shape {image.shape}.")
        if box is not None:
            image = CropToBox()(image, box)
        scaled = ScaleTo255()(TopPercentileClip(self.top_percent)(image))
        out = ImageNetNormalize()(ToChannels(3)(Resize2D(self.size, antialias=self.antialias)(scaled)))
        return _flip_maybe(out, rng)[0]

    def prepare_volume(self, volume: Volume, *, rng: np.random.Generator | None = None) -> Prepared:
        """Middle ``fraction`` of slices -> (S_mid, 3, size, size) float32."""
        arr = _stack(volume)
        keep = MiddleSlices(self.fraction).indices(arr.shape[0])
        out = np.stack([self.prepare_image(s, is_hu=volume.is_hu) for s in arr[keep]]).astype(np.float32)
        out, flipped = _flip_maybe(out, rng)
        _, h, w = arr.shape
        slices = range(keep.start, keep.stop)
        geometry = slicewise(arr.shape, (len(slices), self.size, self.size), slices,
                             [(0, 0, w, h)] * len(slices))
        return Prepared(out, geometry.with_flip(flipped))


@dataclass(frozen=True)
class CovidNet3DRecipe(Recipe):
    """COVIDNet 3D (Liu et al.): HU clip [-1024, 1024] -> [0, 1] (8-bit: /255); linear resize to
    ``depth`` slices; bilinear in-plane resize to ``resize_to``; centre crop ``crop``."""

    name: ClassVar[str] = "covidnet-3d"
    unit: ClassVar[str] = "scan"
    depth: int = 64
    resize_to: int = 512
    crop: int = 384
    hu_min: float = -1024.0
    hu_max: float = 1024.0

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.depth, self.crop, self.crop)

    def prepare_volume(self, volume: Volume, *, rng: np.random.Generator | None = None) -> Prepared:
        """-> (1, depth, crop, crop) float32 in [0, 1]; flipped horizontally (p=0.5) iff ``rng``."""
        arr = _stack(volume)
        scaled = HUClip(self.hu_min, self.hu_max)(arr) if volume.is_hu else _grey8(arr) / UINT8_MAX
        stack = Resize2D(self.resize_to)(ResizeDepth(self.depth)(scaled))
        crop = CenterCrop(self.crop)
        out, flipped = _flip_maybe(crop(stack)[None].astype(np.float32), rng)
        grid = (self.depth, self.resize_to, self.resize_to)
        geometry = volumetric(arr.shape, (self.depth, self.crop, self.crop), grid,
                              crop.box(self.resize_to, self.resize_to))
        return Prepared(out, geometry.with_flip(flipped))


@dataclass(frozen=True)
class _CovidCTNetGrid(Recipe):
    """What both CovidCTNet recipes share: ``depth`` slices of ``size`` x ``size`` after
    resampling to ``spacing`` (mm, z y x), HU kept in [``hu_min``, ``hu_max``]."""

    size: int = 240
    depth: int = 50
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hu_min: float = -1000.0
    hu_max: float = 400.0

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.depth, self.size, self.size)


@dataclass(frozen=True)
class CovidCTNetRecipe(_CovidCTNetGrid):
    """CovidCTNet: resample to ``spacing`` (1x1x1 mm) with linear interpolation, HU window
    [-1000, 400] -> [0, 1] (8-bit: /255), slices ``size`` x ``size`` (240; 128 for the
    authors' small classifier); the classifier gets ``depth`` (50) slices.

    The in-plane step resizes straight to ``size`` (with antialiasing), which equals resampling
    to 1 mm and then resizing; the z axis is resampled to ``spacing[0]``.
    """

    name: ClassVar[str] = "covidctnet"
    unit: ClassVar[str] = "scan"

    def _scaled(self, volume: Volume) -> np.ndarray:
        arr = _stack(volume)
        scaled = HUClip(self.hu_min, self.hu_max)(arr) if volume.is_hu else _grey8(arr) / UINT8_MAX
        stack = Resize2D(self.size)(scaled)
        n_z = max(1, int(round(arr.shape[0] * float(volume.spacing[0]) / float(self.spacing[0]))))
        return ResizeDepth(n_z)(stack)

    def prepare_slices(self, volume: Volume) -> Prepared:
        """-> (S_1mm, 1, size, size) float32 in [0, 1] for the denoiser (no depth resize)."""
        scaled = self._scaled(volume)
        return Prepared(scaled[:, None].astype(np.float32),
                        volumetric(volume.shape, scaled.shape, scaled.shape))

    def prepare_volume(self, volume: Volume, *, rng: np.random.Generator | None = None) -> Prepared:
        """-> (1, depth, size, size) float32 in [0, 1]; flipped horizontally (p=0.5) iff ``rng``."""
        stack = ResizeDepth(self.depth)(self._scaled(volume))
        out, flipped = _flip_maybe(stack[None].astype(np.float32), rng)
        grid = (self.depth, self.size, self.size)
        return Prepared(out, volumetric(volume.shape, grid, grid).with_flip(flipped))


@dataclass(frozen=True)
class CovidCTNetReleasedRecipe(_CovidCTNetGrid):
    """CovidCTNet as the authors' released code prepares a scan for their released classifier.

    Steps (``preprocessing-step-1/2.ipynb``, ``utilities.py``, ``Testing-CovidCTNet.ipynb``):
    slices ordered by ascending patient z (inferior -> superior: the reverse of a covidct `Volume`),
    HU as int16; resampled to ``spacing`` (1 mm) with a cubic spline (``scipy.ndimage.zoom``,
    ``spline_order`` 3, mode 'nearest', int16 output); HU outside [``hu_min``, ``hu_max``] set to
    ``hu_min`` (not clipped: bone becomes air); scaled to [0, 1]; each slice resized to ``size`` with
    scikit-image ``resize(..., anti_aliasing=True)`` (bilinear); that stack (the denoiser's input,
    `prepare_slices`) or its residual is resized to ``depth`` slices the same way (`to_classifier_input`).
    8-bit input: grey / 255, resampled in float, no HU step.
    """

    name: ClassVar[str] = "covidctnet-released"
    unit: ClassVar[str] = "scan"
    size: int = 128
    spline_order: int = 3

    def _resampled(self, volume: Volume) -> np.ndarray:
        """(z, y, x) at ``spacing``, inferior -> superior, in [0, 1] (float64, as the authors' code)."""
        from scipy import ndimage

        arr = _stack(volume)[::-1]
        if volume.is_hu:
            arr = np.rint(np.clip(arr, np.iinfo(np.int16).min, np.iinfo(np.int16).max)).astype(np.int16)
        else:
            arr = _grey8(arr).astype(np.float64) / UINT8_MAX
        new_shape = np.round(np.asarray(arr.shape) * np.asarray(volume.spacing) / np.asarray(self.spacing))
        out = ndimage.zoom(arr, new_shape / np.asarray(arr.shape), order=self.spline_order, mode="nearest")
        if not volume.is_hu:
            return np.clip(out, 0.0, 1.0)
        out[(out > self.hu_max) | (out < self.hu_min)] = self.hu_min
        return np.clip((out - self.hu_min) / (self.hu_max - self.hu_min), 0.0, 1.0)

    def _resize(self, stack: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        from skimage.transform import resize

        return resize(stack, shape, anti_aliasing=True)

    def prepare_slices(self, volume: Volume) -> Prepared:
        """-> (S_1mm, 1, size, size) float32 in [0, 1], inferior -> superior: the denoiser's input."""
        stack = self._resampled(volume)
        slices = self._resize(stack, (stack.shape[0], self.size, self.size)).astype(np.float32)
        return Prepared(slices[:, None], volumetric(volume.shape, slices.shape, slices.shape))

    def to_classifier_input(self, slices: np.ndarray) -> np.ndarray:
        """(S, 1, size, size) slices or residuals -> (1, depth, size, size) float32 (depth resize)."""
        stack = np.asarray(slices, dtype=np.float64)[:, 0]
        return self._resize(stack, (self.depth, self.size, self.size))[None].astype(np.float32)

    def prepare_volume(self, volume: Volume, *, rng: np.random.Generator | None = None) -> Prepared:
        """-> (1, depth, size, size) float32 in [0, 1]; flipped horizontally (p=0.5) iff ``rng``."""
        out, flipped = _flip_maybe(self.to_classifier_input(self.prepare_slices(volume).array), rng)
        grid = (self.depth, self.size, self.size)
        return Prepared(out, volumetric(volume.shape, grid, grid).with_flip(flipped))

    def to_volume(self, heat: np.ndarray, geometry: Geometry, *,
                  rows: list[int] | tuple[int, ...] | None = None) -> np.ndarray:
        """Inverse of `prepare_volume` / `prepare_slices`: the depth axis runs inferior -> superior here,
        so it is reversed before the map goes back onto the volume grid."""
        return geometry.to_volume(np.asarray(heat)[::-1], rows=rows)


_RECIPE_CLASSES = (
    CovidNetCT2Recipe, AiCoronaRecipe, CovidNet3DRecipe, CovidCTNetRecipe, CovidCTNetReleasedRecipe
)
_RECIPES: dict[str, type[Recipe]] = {cls.name: cls for cls in _RECIPE_CLASSES}


def list_recipes() -> list[str]:
    """Registered recipe names, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """Build recipe ``name`` with parameter ``overrides`` (e.g. ``size=128``)."""
    if name not in _RECIPES:
        raise UnknownNameError(unknown_name_message("recipe", name, list(_RECIPES)))
    cls = _RECIPES[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"Recipe {name!r} has no parameter(s) {unknown}; valid parameters: {valid}.")
    return cls(**overrides)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Inverse of `Recipe.to_dict` (a checkpoint's ``recipe``); only ``name`` is required."""
    if not isinstance(d, dict) or "name" not in d:
        raise ConfigError(f"A recipe dict needs a 'name' key (one of {list_recipes()}), got {d!r}.")
    params = dict(d)
    name = params.pop("name")
    unit = params.pop("unit", None)
    recipe = get_recipe(name, **params)
    if unit is not None and unit != recipe.unit:
        raise ConfigError(f"Recipe {name!r} has unit {recipe.unit!r}, but the dict says {unit!r}.")
    return recipe
