"""DICOM header pass: read and validate every header value the reader uses, once per file.

`read_header` reads one file with ``stop_before_pixels`` (deflated files: an inflated copy within the
budgets) into a `SliceHeader`; `scan_headers` does it for every candidate file under a folder. Values are
checked here (`header_number`, `header_int`, ...): a bad one raises `InvalidHeaderError` naming the file,
the tag and what to do.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from covidct.errors import (
    CorruptFileError,
    CovidCTError,
    InvalidHeaderError,
    NoDataError,
    ResourceLimitError,
)
from covidct.io.limits import (
    ReadLimits,
    format_bytes,
    is_regular_file,
)

MAX_POSITION_MM = 1e7
"""Patient positions beyond 10 km are damaged values, not geometry."""


MAX_SPACING_MM = 1e4


MAX_DIMENSION = 65535
"""Rows and Columns are 16-bit (US) in DICOM."""


SHOWN_VALUE_CHARS = 60


INFLATE_CHUNK = 64 * 1024


TEXT_TAGS = (
    "StudyInstanceUID",
    "SOPInstanceUID",
    "Manufacturer",
    "ConvolutionKernel",
    "PatientID",
    "PatientAge",
    "PatientSex",
    "SeriesDescription",
)
"""Descriptive tags kept as text for `VolumeMetadata`."""


DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
"""Deflated explicit VR LE: the header pass reads an inflated copy, so file offsets do not apply."""


@dataclass
class SliceHeader:
    """What the header pass keeps about one DICOM file."""

    path: Path
    name: str
    series_uid: str
    modality: str
    image_type: tuple[str, ...]
    iop: tuple[float, ...] | None
    ipp: tuple[float, float, float] | None
    rows: int | None
    columns: int | None
    instance_number: int | None
    transfer_syntax: str
    dataset: Dataset = field(repr=False)
    pixel_offset: int | None = None
    """File offset where the header pass stopped (the PixelData element), so the pixel pass does not
    parse the header again; None when unknown."""
    slope: float = 1.0
    intercept: float = 0.0
    padding: int | None = None
    """PixelPaddingValue as the stored integer (sign resolved by PixelRepresentation)."""
    bits_allocated: int = 16
    pixel_representation: int = 0
    samples_per_pixel: int = 1
    frames: int = 1
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    gantry_tilt: float | None = None
    texts: dict[str, str | None] = field(default_factory=dict)
    """Descriptive tags (`TEXT_TAGS`) as text."""

    @property
    def decoded_bytes(self) -> int:
        """Bytes pydicom allocates to decode this file's pixels (all frames and samples)."""
        per_sample = max(self.bits_allocated, 8) // 8
        return (self.rows or 0) * (self.columns or 0) * self.frames * self.samples_per_pixel * per_sample

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row x column direction), LPS; None without ImageOrientationPatient."""
        if self.iop is None or len(self.iop) != 6:
            return None
        n = np.cross(np.asarray(self.iop[:3]), np.asarray(self.iop[3:]))
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 0 else None


def _shown(value: Any) -> str:
    """repr of a header value, shortened for messages."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS] + "...'"


def _raw_value(ds: Dataset, keyword: str, name: str) -> Any:
    """``ds.get(keyword)``; an element pydicom cannot convert (unknown VR, broken value) is an error."""
    try:
        value = ds.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom: NotImplementedError (unknown VR), ValueError, ...
        raise InvalidHeaderError(
            f"{keyword} cannot be read in {name} ({type(exc).__name__}: {exc}); the element is damaged. "
            "Re-export the file, or remove it from the folder."
        ) from exc
    return None if value is None or value == "" else value


def header_numbers(
    ds: Dataset, keyword: str, name: str, count: int, *, positive: bool = False, max_abs: float = math.inf
) -> tuple[float, ...] | None:
    """``count`` finite numbers from a (multi-valued) tag; None when absent.

    Raises:
        InvalidHeaderError: naming the tag and file, when a value is not a (positive) finite number.
    """
    value = _raw_value(ds, keyword, name)
    if value is None:
        return None
    values = [value] if isinstance(value, (str, bytes, int, float)) else value
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError, OverflowError):
        numbers = ()
    plural = "a number" if count == 1 else f"{count} numbers"
    kind = "positive finite" if positive else "finite"
    if max_abs < math.inf:
        kind += f", at most {max_abs:g} in size"
    if len(numbers) != count or not all(
        math.isfinite(v) and abs(v) <= max_abs and (v > 0 or not positive) for v in numbers
    ):
        raise InvalidHeaderError(
            f"{keyword} is {_shown(value)} in {name}; expected {plural} ({kind}). "
            "Fix the tag or re-export the file, or remove it from the folder."
        )
    return numbers


def header_number(
    ds: Dataset, keyword: str, name: str, *, default: float | None = None, positive: bool = False
) -> float | None:
    """One finite number from a tag, ``default`` when absent; InvalidHeaderError names a bad value."""
    numbers = header_numbers(ds, keyword, name, 1, positive=positive)
    return default if numbers is None else numbers[0]


def header_int(
    ds: Dataset, keyword: str, name: str, *, default: int | None = None, low: int = 0, high: int = 2**31
) -> int | None:
    """One whole number in [low, high] from a tag, ``default`` when absent."""
    number = header_number(ds, keyword, name)
    if number is None:
        return default
    if number != int(number) or not low <= number <= high:
        raise InvalidHeaderError(
            f"{keyword} is {_shown(number)} in {name}; expected a whole number from {low} to {high}. "
            "Fix the tag or re-export the file, or remove it from the folder."
        )
    return int(number)


def header_text(ds: Dataset, keyword: str) -> str | None:
    """A tag as text (descriptive tags only; an unreadable value counts as absent)."""
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else str(value)
    except Exception:  # noqa: BLE001 - descriptive text is optional
        return None


def _image_type(ds: Dataset) -> tuple[str, ...]:
    try:
        value = ds.get("ImageType") or []
        values = [value] if isinstance(value, str) else list(value)
        return tuple(str(v).upper() for v in values)
    except Exception:  # noqa: BLE001 - descriptive, optional
        return ()


CLAMP_READS_FROM = 1 << 16
"""`_ClampedReader` checks reads longer than this (bytes) against the file size; the many short
header reads skip the check (a 64 KiB read costs at most 64 KiB whatever the file says)."""


class _ClampedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than the bytes left in the file.

    pydicom calls ``read(length)`` with the element length from the file; a damaged length of ~4 GiB
    would make Python allocate 4 GiB up front. Clamping keeps reads to what is really there.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > CLAMP_READS_FROM:  # small reads cannot over-allocate
            size = min(size, max(self._size - self.tell(), 0))
        return super().read(size)


def looks_like_dicom(path: Path) -> bool:
    """True when the (regular) file has the 'DICM' magic at byte 128."""
    if not is_regular_file(path):
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _meta_end(fh: Any) -> tuple[str, int] | None:
    """(transfer syntax, offset where the dataset starts) from the file meta, or None when unreadable."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
        return str(meta.get("TransferSyntaxUID", "") or ""), fh.tell()
    except Exception:  # noqa: BLE001 - not DICOM or damaged meta: dcmread reports it
        return None


def check_inflated_size(path: Path, name: str, limits: ReadLimits) -> None:
    """For deflated-transfer-syntax files, inflate in chunks and refuse before pydicom inflates it all.

    Raises:
        ResourceLimitError: the data inflates beyond ``limits.max_inflated_bytes`` or its ratio limit.
        CorruptFileError: the deflate stream is damaged.
    """
    with _ClampedReader(path) as fh:
        found = _meta_end(fh)
        if found is None or found[0] != DEFLATED_SYNTAX:
            return
        compressed = max(fh._size - found[1], 1)  # noqa: SLF001
        limit = int(min(limits.max_inflated_bytes, limits.max_inflate_ratio * compressed))
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        try:
            while chunk := fh.read(INFLATE_CHUNK):
                total += len(inflater.decompress(chunk, limit + 1 - total))
                while inflater.unconsumed_tail and total <= limit:
                    total += len(inflater.decompress(inflater.unconsumed_tail, limit + 1 - total))
                if total > limit:
                    raise ResourceLimitError(
                        f"Deflated DICOM file {name} inflates beyond {format_bytes(limit)} from "
                        f"{format_bytes(compressed)} (limits: {format_bytes(limits.max_inflated_bytes)} and "
                        f"{limits.max_inflate_ratio:g}x); it looks like a decompression bomb. "
                        "If it is genuine, "
                        "raise COVIDCT_MAX_INFLATED_BYTES / COVIDCT_MAX_INFLATE_RATIO."
                    )
        except zlib.error as exc:
            raise CorruptFileError(
                f"Deflated DICOM file {name} has a damaged deflate stream ({exc}); re-export it."
            ) from exc


def read_header(path: Path, name: str | None = None, limits: ReadLimits | None = None) -> SliceHeader | None:
    """Header of one file (no pixels), every value used later validated here; None when not DICOM.

    Raises:
        CorruptFileError: the file starts like DICOM but cannot be parsed (truncated, damaged).
        InvalidHeaderError: a tag covidct uses holds a bad value (named in the message).
        ResourceLimitError: a deflated file inflates beyond the budget.
    """
    name = name or path.name
    limits = limits or ReadLimits.from_env()
    if not is_regular_file(path):
        return None
    try:
        check_inflated_size(path, name, limits)
        with _ClampedReader(path) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            offset = fh.tell()
    except InvalidDicomError:
        return None
    except CovidCTError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        if looks_like_dicom(path):
            raise CorruptFileError(
                f"DICOM file {name} is damaged or truncated ({type(exc).__name__}: {exc}). "
                "Re-export or re-download it, or remove it from the folder."
            ) from exc
        return None
    if "SOPClassUID" not in ds and looks_like_dicom(path):
        raise CorruptFileError(
            f"DICOM file {name} ends inside its header (no SOP Class UID after the file meta); it is "
            "damaged or truncated. Re-export or re-download it, or remove it from the folder."
        )
    return _slice_header(ds, path, name, offset)


def _slice_header(ds: Dataset, path: Path, name: str, offset: int) -> SliceHeader:
    """Every header value the reader uses, read and validated once (tag named on error)."""
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    bits = header_int(ds, "BitsAllocated", name, default=16, low=1, high=64)
    padding = header_int(ds, "PixelPaddingValue", name, low=-(2**31), high=2**32)
    representation = header_int(ds, "PixelRepresentation", name, default=0, low=0, high=1)
    assert bits is not None and representation is not None
    if padding is not None and representation == 1 and padding >= 1 << (bits - 1):
        padding -= 1 << bits  # US/SS ambiguity resolved by PixelRepresentation
    ipp = header_numbers(ds, "ImagePositionPatient", name, 3, max_abs=MAX_POSITION_MM)
    return SliceHeader(
        path=path,
        name=name,
        series_uid=header_text(ds, "SeriesInstanceUID") or "",
        modality=(header_text(ds, "Modality") or "").upper(),
        image_type=_image_type(ds),
        iop=header_numbers(ds, "ImageOrientationPatient", name, 6),
        ipp=ipp,  # type: ignore[arg-type]
        rows=header_int(ds, "Rows", name, low=1, high=MAX_DIMENSION),
        columns=header_int(ds, "Columns", name, low=1, high=MAX_DIMENSION),
        instance_number=header_int(ds, "InstanceNumber", name, low=-(2**31), high=2**31),
        transfer_syntax=tsuid,
        dataset=ds,
        pixel_offset=None if tsuid == DEFLATED_SYNTAX else offset,  # deflated: offset is not in the file
        slope=header_number(ds, "RescaleSlope", name, default=1.0),  # type: ignore[arg-type]
        intercept=header_number(ds, "RescaleIntercept", name, default=0.0),  # type: ignore[arg-type]
        padding=padding,
        bits_allocated=bits,
        pixel_representation=representation,
        samples_per_pixel=header_int(ds, "SamplesPerPixel", name, default=1, low=1, high=4),  # type: ignore[arg-type]
        frames=header_int(ds, "NumberOfFrames", name, default=1, low=1, high=2**31),  # type: ignore[arg-type]
        pixel_spacing=header_numbers(ds, "PixelSpacing", name, 2, positive=True, max_abs=MAX_SPACING_MM),  # type: ignore[arg-type]
        slice_thickness=header_number(ds, "SliceThickness", name),
        spacing_between_slices=header_number(ds, "SpacingBetweenSlices", name),
        gantry_tilt=header_number(ds, "GantryDetectorTilt", name),
        texts={key: header_text(ds, key) for key in TEXT_TAGS},
    )


def _candidate_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (recursive, links to folders not followed), DICOMDIR and
    hidden files excluded; FIFOs, devices and sockets are never listed."""
    return sorted(
        p
        for p in folder.rglob("*")
        if is_regular_file(p) and p.name.upper() != "DICOMDIR" and not p.name.startswith(".")
    )


@dataclass
class HeaderScan:
    """Result of the header pass: readable headers, and the files that failed (name -> message)."""

    headers: list[SliceHeader]
    failed: dict[str, str]
    errors: list[CovidCTError]


def scan_headers(
    files: list[Path], root: Path, names: dict[Path, str] | None = None, limits: ReadLimits | None = None
) -> HeaderScan:
    """Header pass over ``files``; non-DICOM files are skipped, damaged ones collected in ``failed``.

    Raises:
        NoDataError: none of the files is DICOM. The first header error when no file is readable.
    """
    limits = limits or ReadLimits.from_env()
    headers: list[SliceHeader] = []
    failed: dict[str, str] = {}
    errors: list[CovidCTError] = []
    for p in files:
        name = (names or {}).get(p) or _display_name(p, root)
        try:
            header = read_header(p, name, limits)
        except (CorruptFileError, ResourceLimitError) as exc:
            failed[name] = str(exc)
            errors.append(exc)
            continue
        if header is not None:
            headers.append(header)
    if not headers:
        if errors:
            raise errors[0]
        raise NoDataError(
            f"No DICOM files found in {root} ({len(files)} files looked at). "
            "Give a folder, .zip or file holding a DICOM CT series, a NIfTI file or PNG/JPG slices."
        )
    return HeaderScan(headers, failed, errors)


def _display_name(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
        return str(rel) if str(rel) != "." else path.name
    except ValueError:
        return path.name
