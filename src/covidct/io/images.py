"""PNG/JPG slices: one image or a folder of images -> 8-bit grey; folders -> `Volume` (is_hu False)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from covidct.errors import CorruptFileError, InconsistentSeriesError, NoDataError
from covidct.io.volume import Volume, VolumeMetadata

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
UINT8_MAX = 255
DEFAULT_PIXEL_MM = 1.0
"""Screenshots carry no spacing: 1 mm per pixel and per slice is assumed."""


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


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG/JPG slice -> uint8 (H, W) grey (RGB/RGBA converted with ITU-R 601 luma).

    Raises:
        NoDataError: missing file. CorruptFileError: not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise NoDataError(f"Image file {path} does not exist.")
    try:
        with Image.open(path) as img:
            img.load()
            return _to_grey(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CorruptFileError(
            f"Cannot read image {path} ({type(exc).__name__}: {exc}); it is truncated or not PNG/JPG."
        ) from exc


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, naturally sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_image(p)), key=lambda p: natural_key(p.name)
    )


def read_image_volume(path: str | os.PathLike[str]) -> Volume:
    """One image or a folder of same-size images -> Volume float32 (z, H, W) in [0, 255], is_hu False.

    Slices follow the natural order of the file names (1, 2, 10). Spacing is unknown: 1 mm assumed.

    Raises:
        NoDataError: no images. InconsistentSeriesError: images differ in size.
    """
    path = Path(path)
    files = image_files(path) if path.is_dir() else [path]
    if not files:
        raise NoDataError(f"No PNG/JPG images in {path}.")
    slices = [read_image(f) for f in files]
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise InconsistentSeriesError(
            f"Images in {path} differ in size ({len(shapes)} sizes, e.g. {sorted(shapes)[:3]}); "
            "they cannot be stacked into a volume. "
            "Read them one by one with read_image, or resize them first."
        )
    meta = VolumeMetadata(
        source=str(path),
        format="image",
        files=[f.name for f in files],
        warnings=["8-bit images: values are windowed grey levels, not HU; spacing unknown (1 mm assumed)"],
    )
    return Volume(
        array=np.stack(slices).astype(np.float32),
        spacing=(DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM, DEFAULT_PIXEL_MM),
        is_hu=False,
        meta=meta,
    )
