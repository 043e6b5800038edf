"""Small, pure preprocessing transforms (TorchIO style: parameters in ``__init__``, work in ``__call__``).

Arrays are numpy, float32 on output. Shapes use (H, W) for one image, (S, H, W) for a stack of
slices (axial, superior -> inferior) and (C, H, W) / (S, C, H, W) once channels exist.
Boxes are (xmin, ymin, xmax, ymax) in pixels, xmax/ymax exclusive (COVIDx CT convention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.filters import threshold_otsu

from covidct.errors import ConfigError, ShapeError
from covidct.preprocessing.lung_intensity import enclosed_dark_mask
from covidct.preprocessing.masks import fill_holes
from covidct.preprocessing.window import LUNG_WINDOW, Window, window, window_to_uint8

Box = tuple[int, int, int, int]

UINT8_MAX = 255.0
BODY_EROSION_FRACTION = 0.02
MIN_BODY_EROSION = 2
BODY_MEASURE_SCALE = 2
"""`BodyBox` measures on a grid this many times coarser (2x2 block means; blur and erosion scaled to
match): ~4.8x faster on P001. On the 6 shared chest series (509 slices) no box edge moved more than 2 px at
512 px (tests/preprocessing/test_transforms.py, test_realdata.py); on the 20-slice abdominal example
(misc-ct) one slice's box moved 62 px (an arm joined to the body by a thin bridge that one grid
erodes away and the other keeps)."""
BODY_MEASURE_MIN_SIDE = 128
"""Images whose short side is below ``BODY_MEASURE_SCALE`` x this are measured at full resolution."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_ndim(x: np.ndarray, allowed: Sequence[int], what: str) -> None:
    if x.ndim not in allowed:
        dims = " or ".join(f"{d}D" for d in allowed)
        raise ShapeError(f"{what} expects a {dims} array, but it is {x.ndim}D (shape {tuple(x.shape)}).")


class LungWindow:
    """HU -> 8-bit grey values with a window (`covidct.preprocessing.window.window`, the one
    implementation): ``clip((hu - (wc - ww/2)) / ww, 0, 1) * 255``.

    The default is `LUNG_WINDOW` (-600/1500: -1350 HU -> 0, 150 HU -> 255). Output float32 in
    [0, 255] (not rounded unless ``round_to_uint8``: then uint8, rounded to nearest), any shape.
    """

    def __init__(self, center: float = LUNG_WINDOW.center, width: float = LUNG_WINDOW.width,
                 round_to_uint8: bool = False) -> None:
        self.win = Window(float(center), float(width))  # ConfigError when width <= 0
        self.center, self.width, self.round_to_uint8 = self.win.center, self.win.width, round_to_uint8

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        return window_to_uint8(hu, win=self.win) if self.round_to_uint8 else window(hu, self.win)


class HUClip:
    """Clip HU to [lo, hi]; with ``scale01`` map linearly to [0, 1]. Any shape, float32 out."""

    def __init__(self, lo: float, hi: float, scale01: bool = True) -> None:
        if hi <= lo:
            raise ConfigError(f"HUClip needs lo < hi, got lo={lo}, hi={hi}.")
        self.lo, self.hi, self.scale01 = float(lo), float(hi), scale01

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        out = np.clip(np.asarray(hu, dtype=np.float32), self.lo, self.hi)
        return ((out - self.lo) / (self.hi - self.lo)).astype(np.float32) if self.scale01 else out


def _block_mean(image: np.ndarray, f: int) -> np.ndarray:
    """(H, W) -> (H // f, W // f) means of f x f blocks (rows and columns past a multiple of f dropped);
    summed view by view, ~4x faster than a reshape-and-mean at 512 px."""
    h, w = image.shape[0] // f * f, image.shape[1] // f * f
    total = np.zeros((h // f, w // f), np.float32)
    for dy in range(f):
        for dx in range(f):
            total += image[dy:h:f, dx:w:f]
    return total * np.float32(1.0 / (f * f))


class BodyBox:
    """Bounding box of the body in one 2D slice (HU or 8-bit, any scale).

    Gaussian blur (``sigma`` px) -> Otsu threshold -> fill holes (lungs inside the body) ->
    binary erosion (``erosion`` iterations; default 2% of the smaller image side, which cuts
    the table, cables and blankets off the body) -> largest connected component -> box
    (xmin, ymin, xmax, ymax), exclusive, grown back by the erosion plus ``margin`` px.
    A slice with no foreground gives the full image. Slices of at least ``scale`` x
    `BODY_MEASURE_MIN_SIDE` px are measured on a ``scale`` times coarser grid (``scale=1``: full
    resolution); the box is returned in the slice's own pixels.
    """

    def __init__(self, sigma: float = 2.0, erosion: int | None = None, margin: int = 2,
                 erosion_fraction: float = BODY_EROSION_FRACTION, scale: int = BODY_MEASURE_SCALE) -> None:
        if int(scale) < 1:
            raise ConfigError(f"BodyBox scale must be a positive integer, got {scale!r}.")
        self.sigma, self.margin, self.scale = float(sigma), int(margin), int(scale)
        self.erosion, self.erosion_fraction = erosion, float(erosion_fraction)

    def _iterations(self, shape: tuple[int, int]) -> int:
        if self.erosion is not None:
            return int(self.erosion)
        return max(MIN_BODY_EROSION, int(round(self.erosion_fraction * min(shape))))

    def __call__(self, image: np.ndarray) -> Box:
        image = np.asarray(image, dtype=np.float32)
        _check_ndim(image, (2,), "BodyBox")
        h, w = image.shape
        f = self.scale if min(h, w) >= self.scale * BODY_MEASURE_MIN_SIDE else 1
        iterations = self._iterations((h, w))
        if f == 1:
            return self._measure(image, self.sigma, iterations, self.margin)
        coarse = _block_mean(image, f)
        x0, y0, x1, y1 = self._measure(coarse, self.sigma / f, -(-iterations // f), 0)
        m = self.margin
        return (max(x0 * f - m, 0), max(y0 * f - m, 0), min(x1 * f + m, w), min(y1 * f + m, h))

    @staticmethod
    def _measure(image: np.ndarray, sigma: float, iterations: int, margin: int) -> Box:
        """The box of ``image`` at its own resolution (blur, Otsu, fill, erode, largest component)."""
        h, w = image.shape
        full = (0, 0, w, h)
        blurred = ndimage.gaussian_filter(image, sigma)
        if float(blurred.max() - blurred.min()) < 1e-6:
            return full
        mask = fill_holes(blurred > threshold_otsu(blurred))
        eroded = ndimage.binary_erosion(mask, iterations=iterations) if iterations > 0 else mask
        if eroded.any():
            mask = eroded
        else:  # a tiny body: keep the un-eroded mask
            iterations = 0
        labels, n = ndimage.label(mask)
        if n == 0:
            return full
        sizes = np.bincount(labels.ravel())[1:]
        rows, cols = ndimage.find_objects(labels)[int(np.argmax(sizes))]
        grow = iterations + margin  # undo the erosion, plus a margin
        return (max(cols.start - grow, 0), max(rows.start - grow, 0),
                min(cols.stop + grow, w), min(rows.stop + grow, h))

    def boxes(self, stack: np.ndarray, *, workers: int = 1) -> list[Box]:
        """One box per slice of a (S, H, W) stack, ``[self(s) for s in stack]``, with the slices
        spread over ``workers`` threads (scipy's filters and labelling release the GIL).

        Whole-stack morphology (in-plane structuring elements on the 3D array) gives the same
        boxes but measured no faster than per-slice calls at 512 px (docs/results.md, issue 13).
        """
        stack = np.asarray(stack, dtype=np.float32)
        _check_ndim(stack, (3,), "BodyBox.boxes")
        return map_slices(self, stack, workers)


def map_slices(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> list[Any]:
    """``[fn(i) for i in items]``, spread over ``workers`` threads (the per-slice filters, labelling
    and resizing release the GIL for much of their time)."""
    items = list(items)
    if workers <= 1 or len(items) < 2:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def crop_resize_slice(grey: np.ndarray, box: Box, size: int, *, antialias: bool = True) -> np.ndarray:
    """One (H, W) 0..255 slice cropped to ``box``, /255, bilinear resized: (size, size) float32, the
    numbers of one channel of `prepare_image` (``Resize2D(size)(ToChannels(3)(crop) / 255)``)."""
    grey = np.asarray(grey, dtype=np.float32)
    _check_ndim(grey, (2,), "crop_resize_slice")
    return _resize_each(CropToBox()(grey[None], box) / UINT8_MAX, size, antialias)[0]


def _resize_each(stack: np.ndarray, size: int, antialias: bool) -> np.ndarray:
    """Bilinear resize of (N, h, w) -> (N, size, size), each image clamped to its own value range
    (as `Resize2D` on one image)."""
    if stack.shape[-2:] == (size, size):
        return stack
    t = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
    resized = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    lo = t.amin(dim=(1, 2, 3), keepdim=True)
    hi = t.amax(dim=(1, 2, 3), keepdim=True)
    return torch.maximum(torch.minimum(resized, hi), lo)[:, 0].numpy()


MIN_LUNG_BOX_FRACTION = 0.02
"""`LungBox` falls back to the body box when the lung mask covers less than this fraction of the image."""


class LungBox:
    """Bounding box of the lungs (`enclosed_dark_mask`) of one grey slice, grown by ``margin_fraction``
    of its size; the body box (`BodyBox`) when the lungs cover < ``MIN_LUNG_BOX_FRACTION`` of the
    image (no lungs in the slice, or an image already cropped to the lungs). Dense lesions at the
    lung edge are not dark, so the margin (15% of the dark box) is what keeps them in the crop."""

    def __init__(self, margin_fraction: float = 0.15, min_fraction: float = MIN_LUNG_BOX_FRACTION) -> None:
        self.margin_fraction, self.min_fraction = float(margin_fraction), float(min_fraction)

    def __call__(self, grey: np.ndarray) -> Box:
        grey = np.asarray(grey, dtype=np.float32)
        h, w = grey.shape[-2:]
        mask = enclosed_dark_mask(grey)
        if mask.sum() < self.min_fraction * mask.size:
            return BodyBox()(grey)
        ys, xs = np.nonzero(mask)
        my = int(round(self.margin_fraction * (ys.max() - ys.min() + 1)))
        mx = int(round(self.margin_fraction * (xs.max() - xs.min() + 1)))
        return (max(int(xs.min()) - mx, 0), max(int(ys.min()) - my, 0),
                min(int(xs.max()) + 1 + mx, w), min(int(ys.max()) + 1 + my, h))


def union_box(boxes: Sequence[Box]) -> Box:
    """Smallest box containing all ``boxes``."""
    arr = np.asarray(boxes, dtype=int)
    return (int(arr[:, 0].min()), int(arr[:, 1].min()), int(arr[:, 2].max()), int(arr[:, 3].max()))


class CropToBox:
    """Crop the last two axes (..., H, W) to a box (xmin, ymin, xmax, ymax), clipped to the image."""

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        h, w = image.shape[-2:]
        x0, y0, x1, y1 = self.clip(box, (h, w))
        return image[..., y0:y1, x0:x1]

    @staticmethod
    def clip(box: Box, shape: tuple[int, int]) -> Box:
        """The box actually cut from an image of ``shape`` (h, w): rounded, inside, non-empty."""
        h, w = shape
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        x1, y1 = max(min(x1, w), x0 + 1), max(min(y1, h), y0 + 1)
        return (x0, y0, x1, y1)


class Resize2D:
    """Bilinear resize of the last two axes (..., H, W) -> (..., size, size) (or (h, w)).

    ``antialias`` (default True) low-pass filters when shrinking, as PIL does.
    """

    def __init__(self, size: int | tuple[int, int], antialias: bool = True) -> None:
        self.size = (int(size), int(size)) if isinstance(size, int | np.integer) else tuple(map(int, size))
        self.antialias = antialias

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        _check_ndim(image, (2, 3, 4), "Resize2D")
        if tuple(image.shape[-2:]) == self.size:
            return image
        lead = image.shape[:-2]
        t = torch.from_numpy(np.ascontiguousarray(image.reshape(-1, 1, *image.shape[-2:])))
        out = F.interpolate(t, size=self.size, mode="bilinear", align_corners=False,
                            antialias=self.antialias)
        # bilinear is a convex combination: clamp away float round-off outside the input range
        out = out.clamp_(float(t.min()), float(t.max()))
        return out.numpy().reshape(*lead, *self.size)


class ToChannels:
    """(H, W) -> (C, H, W), or (S, H, W) -> (S, C, H, W), repeating the grey channel."""

    def __init__(self, channels: int = 3, stacked: bool = False) -> None:
        self.channels, self.stacked = int(channels), stacked

    def __call__(self, image: np.ndarray) -> np.ndarray:
        axis = 1 if self.stacked else 0
        return np.repeat(np.expand_dims(np.asarray(image, dtype=np.float32), axis), self.channels, axis=axis)


class MiddleSlices:
    """Keep the middle ``fraction`` of slices along axis 0 (ai-corona: the middle 50%), at least one."""

    def __init__(self, fraction: float = 0.5) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"MiddleSlices fraction must be in (0, 1], got {fraction}.")
        self.fraction = float(fraction)

    def indices(self, n: int) -> slice:
        keep = max(1, int(round(n * self.fraction)))
        start = (n - keep) // 2
        return slice(start, start + keep)

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        return stack[self.indices(stack.shape[0])]


class TopPercentileClip:
    """Clip the top ``percent`` % of intensities to the lowest of them (the (100-p)th percentile)."""

    def __init__(self, percent: float = 0.5) -> None:
        if not 0 <= percent < 100:
            raise ConfigError(f"TopPercentileClip percent must be in [0, 100), got {percent}.")
        self.percent = float(percent)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        return np.minimum(image, np.percentile(image, 100.0 - self.percent)).astype(np.float32)


class ScaleTo255:
    """Min-max scale to [0, 255] (a constant image gives zeros)."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        lo, hi = float(image.min()), float(image.max())
        if hi - lo < 1e-6:
            return np.zeros_like(image)
        return ((image - lo) / (hi - lo) * UINT8_MAX).astype(np.float32)


class ImageNetNormalize:
    """(…, 3, H, W) with values in [0, 255] (or [0, 1] with ``max_value=1``) -> ImageNet mean/std."""

    def __init__(self, max_value: float = UINT8_MAX, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.max_value = float(max_value)
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim < 3 or image.shape[-3] != len(self.mean):
            raise ShapeError(f"ImageNetNormalize expects (..., {len(self.mean)}, H, W), got {image.shape}; "
                             "apply ToChannels(3) first.")
        return ((image / self.max_value - self.mean) / self.std).astype(np.float32)


class ResampleSpacing:
    """Resample (z, y, x) from ``spacing`` to ``target`` mm with linear interpolation (order 1).

    Call with ``(array, spacing)``; returns ``(array, new_spacing)`` (the exact spacing reached).
    """

    def __init__(self, target: tuple[float, float, float] = (1.0, 1.0, 1.0), order: int = 1) -> None:
        if len(target) != 3 or min(target) <= 0:
            raise ConfigError(f"ResampleSpacing target must be three positive mm values, got {target}.")
        self.target, self.order = tuple(float(t) for t in target), int(order)

    def __call__(self, array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple]:
        array = np.asarray(array, dtype=np.float32)
        _check_ndim(array, (3,), "ResampleSpacing")
        zoom = [float(s) / t for s, t in zip(spacing, self.target, strict=True)]
        new_shape = [max(1, int(round(n * z))) for n, z in zip(array.shape, zoom, strict=True)]
        out = _resize_3d(array, tuple(new_shape))
        new_spacing = tuple(float(s) * n / m for s, n, m in zip(spacing, array.shape, new_shape, strict=True))
        return out, new_spacing


def _resize_3d(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize (z, y, x) -> ``shape`` with torch (align_corners=False)."""
    if tuple(array.shape) == tuple(shape):
        return array.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()


class ResizeDepth:
    """Linear resize of axis 0 of (S, H, W) to ``depth`` slices (in-plane untouched)."""

    def __init__(self, depth: int) -> None:
        self.depth = int(depth)

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        stack = np.asarray(stack, dtype=np.float32)
        _check_ndim(stack, (3,), "ResizeDepth")
        return _resize_3d(stack, (self.depth, *stack.shape[1:]))


class CenterCrop:
    """Centre crop (or zero-pad) the last two axes to ``size`` x ``size``."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def box(self, h: int, w: int) -> Box:
        """The (xmin, ymin, xmax, ymax) window taken from an (h, w) image, in its pixels; it
        extends past the image (negative start) on a side that is zero-padded."""
        pad_y, pad_x = max(0, (self.size - h + 1) // 2), max(0, (self.size - w + 1) // 2)
        y0 = (h + 2 * pad_y - self.size) // 2 - pad_y
        x0 = (w + 2 * pad_x - self.size) // 2 - pad_x
        return (x0, y0, x0 + self.size, y0 + self.size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[-2:]
        pad = [(0, 0)] * (image.ndim - 2) + [(max(0, (self.size - h + 1) // 2),) * 2,
                                              (max(0, (self.size - w + 1) // 2),) * 2]
        if any(p[0] for p in pad[-2:]):
            image = np.pad(image, pad)
            h, w = image.shape[-2:]
        y0, x0 = (h - self.size) // 2, (w - self.size) // 2
        return image[..., y0:y0 + self.size, x0:x0 + self.size]
