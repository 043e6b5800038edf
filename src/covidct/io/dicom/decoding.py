"""Pixel pass: decode the chosen series' slices (thread pool) into HU.

HU = stored * RescaleSlope + RescaleIntercept. Pixels equal to PixelPaddingValue, or below
``OUT_OF_FIELD_HU`` (outside the scan field, e.g. -2048 / -3024 HU in LIDC-IDRI) are set to
``PADDING_FILL_HU`` (-1024 HU, air), a documented choice so that padding does not create outliers far
below air; their count is kept in ``meta.extra["padding_pixels"]``. A compressed transfer syntax without
its decoder package is a `MissingDecoderError` naming the package.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from covidct.errors import (
    CorruptFileError,
    CovidCTError,
    InconsistentSeriesError,
    MissingDecoderError,
    MissingPixelDataError,
)
from covidct.io.dicom.headers import SliceHeader, _ClampedReader

PADDING_FILL_HU = -1024.0
"""HU given to padding / out-of-field pixels (air)."""


OUT_OF_FIELD_HU = -1500.0
"""Pixels below this HU are out-of-field markers (scanners write -2048 or -3024), not tissue: air is
-1000 HU and its noise stays well above -1500. They are set to PADDING_FILL_HU like padding."""


DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


# Transfer syntax UID -> pip package that provides its decoder.
DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE (pydicom also has a pure-numpy decoder)
}


JPEG_LOSSLESS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
"""Decoded with imagecodecs' ljpeg codec when it is installed (about 3x faster than pylibjpeg-libjpeg
here, and it releases the GIL so the thread pool runs slices in parallel)."""


def decoder_available(transfer_syntax: str) -> bool:
    """Whether pydicom has a working decoder for ``transfer_syntax`` (uncompressed: always)."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(transfer_syntax)
    except (NotImplementedError, ValueError):
        return False
    return bool(decoder.is_available)


def check_decoder(transfer_syntax: str) -> None:
    """Raise MissingDecoderError naming the pip package when no decoder is installed."""
    if transfer_syntax and transfer_syntax in DECODER_PACKAGES and not decoder_available(transfer_syntax):
        name = pydicom.uid.UID(transfer_syntax).name
        package = DECODER_PACKAGES[transfer_syntax]
        raise MissingDecoderError(
            f"The series is compressed with {name} ({transfer_syntax}) and no decoder for it is installed. "
            f"Install one: pip install {package}"
        )


def _fast_codec() -> Any | None:
    """imagecodecs' lossless-JPEG decoder when installed (optional speed-up), else None."""
    try:
        from imagecodecs import ljpeg_decode
    except ImportError:
        return None
    return ljpeg_decode


def _stored_values(ds: Dataset, header: SliceHeader) -> np.ndarray:
    """Stored pixel values of a single-frame dataset (fast path for unsigned JPEG Lossless)."""
    codec = _fast_codec() if header.transfer_syntax in JPEG_LOSSLESS_SYNTAXES else None
    if codec is not None and header.pixel_representation == 0 and header.frames == 1:
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        stored = np.asarray(codec(frame))
        if stored.shape == (header.rows, header.columns):
            return stored
    return ds.pixel_array


def _read_with_pixels(header: SliceHeader) -> Dataset:
    """The slice's dataset with its pixel data: the header-pass dataset plus the elements from the
    stored pixel offset on (the header is not parsed twice); a full read when the offset is unknown."""
    if header.pixel_offset is None:
        with _ClampedReader(header.path) as fh:
            return pydicom.dcmread(fh)
    from pydicom.filereader import data_element_generator

    head = header.dataset
    with _ClampedReader(header.path) as fh:
        fh.seek(header.pixel_offset)
        tail = {
            raw.tag: raw
            for raw in data_element_generator(fh, head.original_encoding[0], head.original_encoding[1])
        }
    ds = Dataset({**head._dict, **tail})  # noqa: SLF001 - same construction as pydicom's reader
    ds.file_meta = head.file_meta
    ds.set_original_encoding(*head.original_encoding, head.original_character_set)
    return ds


def _is_decoder_failure(exc: BaseException) -> bool:
    """True for what a pixel decoder raises on damaged data, False for interrupts and exits.

    Rust decoders (pylibjpeg-rle) turn a panic on malformed RLE segments into pyo3's
    ``PanicException``, which derives from ``BaseException``, not ``Exception``.
    """
    return not isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def decode_slice(header: SliceHeader) -> tuple[np.ndarray, int]:
    """Read and decode one slice -> (float32 (rows, columns) HU, number of padding pixels replaced).

    Raises:
        MissingPixelDataError, CorruptFileError.
    """
    try:
        ds = _read_with_pixels(header)
    except BaseException as exc:  # noqa: BLE001 - see _is_decoder_failure
        if not _is_decoder_failure(exc):
            raise
        raise CorruptFileError(f"Cannot read DICOM file {header.name}: {exc}. Re-export it.") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise MissingPixelDataError(
            f"DICOM file {header.name} has no pixel data (PixelData element absent); "
            "remove it from the series or re-export the images."
        )
    try:
        stored = _stored_values(ds, header)
    except BaseException as exc:  # noqa: BLE001 - decoders raise many types on damaged data
        if not _is_decoder_failure(exc):
            raise
        raise CorruptFileError(
            f"Pixel data of {header.name} cannot be decoded ({type(exc).__name__}: {exc}); "
            "the file is probably truncated or damaged. Re-export it."
        ) from exc
    if stored.ndim != 2:
        raise InconsistentSeriesError(
            f"{header.name} holds {stored.shape} pixels (multi-frame or colour); covidct reads "
            "single-frame greyscale CT slices. Convert the series to one file per slice."
        )
    if stored.shape != (header.rows, header.columns):
        raise CorruptFileError(
            f"Pixel data of {header.name} decodes to {stored.shape} pixels but its header says "
            f"{header.rows}x{header.columns}; the file is damaged. Re-export it."
        )
    slope, intercept = header.slope, header.intercept
    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    padding = header.padding
    mask = hu < OUT_OF_FIELD_HU
    if padding is not None:
        mask |= stored == padding
    n_padding = int(np.count_nonzero(mask))
    if n_padding:
        hu[mask] = PADDING_FILL_HU
    return hu, n_padding


@dataclass
class DecodedSeries:
    """Pixel pass result: HU array of the slices that decoded, their headers, and the failures."""

    array: np.ndarray
    """float32 (z, rows, columns) HU, only the slices that decoded, in the order given."""
    headers: list[SliceHeader]
    padding_pixels: int
    failed: dict[str, str]
    """Display name -> error message of each slice that could not be decoded."""
    errors: list[CovidCTError]


def decode_slices(headers: list[SliceHeader], workers: int = DEFAULT_WORKERS) -> DecodedSeries:
    """Decode ``headers`` in order with a thread pool; a slice that fails is left out and recorded.

    The array is allocated once (the caller has checked its size against the budget) and compacted
    in place when slices fail.
    """
    first = headers[0]
    out = np.empty((len(headers), first.rows or 0, first.columns or 0), dtype=np.float32)
    errors: dict[int, CovidCTError] = {}

    def work(k: int) -> int:
        try:
            out[k], n_padding = decode_slice(headers[k])
        except (CorruptFileError, InconsistentSeriesError) as exc:
            errors[k] = exc
            return 0
        return n_padding

    if workers <= 1 or len(headers) < 4:
        counts = [work(k) for k in range(len(headers))]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            counts = list(pool.map(work, range(len(headers))))
    good = [k for k in range(len(headers)) if k not in errors]
    for j, k in enumerate(good):
        if j != k:
            out[j] = out[k]
    return DecodedSeries(
        array=out[: len(good)],
        headers=[headers[k] for k in good],
        padding_pixels=int(sum(counts)),
        failed={headers[k].name: str(e) for k, e in sorted(errors.items())},
        errors=[errors[k] for k in sorted(errors)],
    )
