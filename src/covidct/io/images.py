"""PNG/JPG slices: one image or a folder of images -> 8-bit grey; folders -> `Volume` (is_hu False)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from covidct.errors import (
    CorruptFileError,
    CovidCTError,
    InconsistentSeriesError,
    NoDataError,
    ResourceLimitError,
)
from covidct.io.limits import (
    ReadLimits,
    bad_slice_warnings,
    check_volume_budget,
    format_bytes,
    is_regular_file,
)
from covidct.io.volume import Volume, VolumeMetadata

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
UINT8_MAX = 255
DEFAULT_PIXEL_MM = 1.0
"""Screenshots carry no spacing: 1 mm per pixel and per slice is assumed."""
MAX_IMAGE_PIXELS = 64 * 1024**2
"""One slice may have at most this many pixels (64 M, e.g. 8192 x 8192); PIL's own bomb check is
replaced by this one, done on the header before any pixel is decoded."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def natural_key(name: str) -> list[object]:
    """Sort key that orders numbered names naturally: '2' < '10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _to_grey(img: Image.Image) -> np.ndarray:
    """PIL image in any mode -> uint8 (H, W). Alpha is composited over black; 16-bit is min-max scaled."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, UINT8_MAX))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I", "I;16", "I;16B", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * UINT8_MAX if hi > lo else np.zeros_like(arr)
        return np.round(scaled).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _check_image_size(img: Image.Image, path: Path, limits: ReadLimits) -> None:
    width, height = img.size
    pixels = width * height
    if pixels <= 0:
        raise CorruptFileError(
            f"Image {path} declares {width}x{height} pixels; it holds no image. Re-export it."
        )
    if pixels > MAX_IMAGE_PIXELS or pixels * 4 > limits.max_volume_bytes:
        raise ResourceLimitError(
            f"Image {path} declares {width}x{height} pixels ({pixels:,}); one slice may have at most "
            f"{MAX_IMAGE_PIXELS:,} pixels within a {format_bytes(limits.max_volume_bytes)} budget. It looks "
            "like a decompression bomb; if it is genuine, downscale it first."
        )


def image_size(path: Path, limits: ReadLimits | None = None) -> tuple[int, int]:
    """(height, width) from the image header only (nothing decoded); checked against the size limits.

    Raises:
        CorruptFileError: not a readable image. ResourceLimitError: too many pixels.
    """
    limits = limits or ReadLimits.from_env()
    try:
        with Image.open(path) as img:
            _check_image_size(img, path, limits)
            return img.size[1], img.size[0]
    except CovidCTError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise _corrupt(path, exc) from exc


def _corrupt(path: Path, exc: BaseException) -> CovidCTError:
    if isinstance(exc, Image.DecompressionBombError):
        return ResourceLimitError(f"Image {path} is too large to decode safely ({exc}); downscale it first.")
    return CorruptFileError(
        f"Cannot read image {path} ({type(exc).__name__}: {exc}); it is truncated, damaged or not an "
        "image (PNG/JPG/BMP/TIFF). Re-export it or remove it."
    )


def read_image(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> np.ndarray:
    """Read a PNG/JPG slice -> uint8 (H, W) grey (RGB/RGBA converted with ITU-R 601 luma).

    The pixel count is checked from the header before decoding (`MAX_IMAGE_PIXELS` and the volume
    budget); PIL's DecompressionBombError and oversized text chunks are reported as errors too.

    Raises:
        NoDataError: missing file. CorruptFileError: not a readable image. ResourceLimitError: too large.
    """
    path = Path(path)
    limits = limits or ReadLimits.from_env()
    if not is_regular_file(path):
        raise NoDataError(f"Image file {path} does not exist or is not a regular file.")
    try:
        with Image.open(path) as img:
            _check_image_size(img, path, limits)
            img.load()
            return _to_grey(img)
    except CovidCTError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise _corrupt(path, exc) from exc


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, naturally sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if is_regular_file(p) and is_image(p)), key=lambda p: natural_key(p.name)
    )


def read_image_volume(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> Volume:
    """One image or a folder of same-size images -> Volume float32 (z, H, W) in [0, 255], is_hu False.

    Slices follow the natural order of the file names (1, 2, 10). Spacing is unknown: 1 mm assumed.
    Sizes are read from the headers and checked against the budget before any slice is decoded.
    An unreadable slice is skipped with a warning naming it when at most `MAX_BAD_SLICE_FRACTION` of
    the slices are unreadable; more, and the folder is refused.

    Raises:
        NoDataError: no images. InconsistentSeriesError: images differ in size. CorruptFileError: too
        many unreadable slices. ResourceLimitError: the stack exceeds the volume budget.
    """
    path = Path(path)
    limits = limits or ReadLimits.from_env()
    files = image_files(path) if path.is_dir() else [path]
    if not files:
        raise NoDataError(f"No PNG/JPG images in {path}.")
    sizes, failed, errors = _header_sizes(files, limits)
    shapes = set(sizes.values())
    if len(shapes) > 1:
        raise InconsistentSeriesError(
            f"Images in {path} differ in size ({len(shapes)} sizes, e.g. {sorted(shapes)[:3]}); "
            "they cannot be stacked into a volume. "
            "Read them one by one with read_image, or resize them first."
        )
    if shapes:
        check_volume_budget((len(sizes), *next(iter(shapes))), limits, f"Image folder {path}")
    slices: list[np.ndarray] = []
    kept: list[Path] = []
    for f in sizes:
        try:
            slices.append(read_image(f, limits))
            kept.append(f)
        except (CorruptFileError, ResourceLimitError) as exc:
            failed[f.name] = str(exc)
            errors.append(exc)
    warnings = bad_slice_warnings(len(files), failed, errors, f"images in {path}")
    meta = VolumeMetadata(
        source=str(path),
        format="image",
        files=[f.name for f in kept],
        warnings=warnings
        + ["8-bit images: values are windowed grey levels, not HU; spacing unknown (1 mm assumed)"],
    )
    return Volume(
        array=np.stack(slices).astype(np.float32),
        spacing=(DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM),
        is_hu=False,
        meta=meta,
    )


def _header_sizes(
    files: list[Path], limits: ReadLimits
) -> tuple[dict[Path, tuple[int, int]], dict[str, str], list[CovidCTError]]:
    """(height, width) of each readable image from its header; unreadable ones collected."""
    sizes: dict[Path, tuple[int, int]] = {}
    failed: dict[str, str] = {}
    errors: list[CovidCTError] = []
    for f in files:
        try:
            sizes[f] = image_size(f, limits)
        except (CorruptFileError, ResourceLimitError) as exc:
            failed[f.name] = str(exc)
            errors.append(exc)
    return sizes, failed, errors
