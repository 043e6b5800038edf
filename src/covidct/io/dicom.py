"""DICOM series reader: a folder (recursive), a .zip or one file -> `Volume` in HU.

Two passes:
1. header pass (``stop_before_pixels``) over every file: group by SeriesInstanceUID, choose a series;
2. pixel pass over the chosen series only, decoded in a thread pool.

Slices are ordered by ImagePositionPatient projected on the slice normal (row x column of
ImageOrientationPatient), superior -> inferior; never by file name. HU = stored * RescaleSlope +
RescaleIntercept. Pixels equal to PixelPaddingValue, or below ``OUT_OF_FIELD_HU`` (outside the
scan field, e.g. -2048 / -3024 HU in LIDC-IDRI) are set to ``PADDING_FILL_HU`` (-1024 HU, air), a
documented choice so that padding does not create outliers far below air; their count is kept in
``meta.extra["padding_pixels"]``.
"""

from __future__ import annotations

import io
import lzma
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from covidct.errors import (
    CorruptFileError,
    CovidCTError,
    InconsistentSeriesError,
    InvalidHeaderError,
    MissingDecoderError,
    MissingPixelDataError,
    ModalityError,
    NoDataError,
    ResourceLimitError,
    SeriesSelectionError,
    UnsafeArchiveError,
)
from covidct.io.limits import (
    ReadLimits,
    bad_slice_warnings,
    check_volume_budget,
    format_bytes,
    is_regular_file,
)
from covidct.io.volume import Volume, VolumeMetadata

PADDING_FILL_HU = -1024.0
"""HU given to padding / out-of-field pixels (air)."""
OUT_OF_FIELD_HU = -1500.0
"""Pixels below this HU are out-of-field markers (scanners write -2048 or -3024), not tissue: air is
-1000 HU and its noise stays well above -1500. They are set to PADDING_FILL_HU like padding."""
GAP_FACTOR = 1.5
"""A step larger than GAP_FACTOR x the median slice spacing is reported as a missing slice."""
DUPLICATE_TOL_MM = 0.01
"""Two slices closer than this along the normal are duplicates."""
UNEQUAL_SPACING_TOL = 0.01
"""Relative spread of slice steps above which spacing is reported as unequal."""
TILT_TOL_DEG = 0.5
"""Angle between the slice-stacking direction and the slice normal reported as gantry tilt."""
MAX_POSITION_MM = 1e7
"""Patient positions beyond 10 km are damaged values, not geometry."""
MAX_SPACING_MM = 1e4
MAX_DIMENSION = 65535
"""Rows and Columns are 16-bit (US) in DICOM."""
SHOWN_VALUE_CHARS = 60
MAX_SHOWN_NAME = 120
INFLATE_CHUNK = 64 * 1024
COPY_CHUNK = 1024 * 1024
ZIP_ENCRYPTED_FLAG = 0x1
ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
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


DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
"""Deflated explicit VR LE: the header pass reads an inflated copy, so file offsets do not apply."""
JPEG_LOSSLESS_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
"""Decoded with imagecodecs' ljpeg codec when it is installed (about 3x faster than pylibjpeg-libjpeg
here, and it releases the GIL so the thread pool runs slices in parallel)."""


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


@dataclass
class SeriesInfo:
    """One series found under a path (what `list_series` returns)."""

    uid: str
    modality: str
    description: str
    num_slices: int
    orientation: str
    image_type: tuple[str, ...]
    rows: int | None
    columns: int | None
    transfer_syntax: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "modality": self.modality,
            "description": self.description,
            "num_slices": self.num_slices,
            "orientation": self.orientation,
            "image_type": list(self.image_type),
            "rows": self.rows,
            "columns": self.columns,
            "transfer_syntax": self.transfer_syntax,
        }


# ---------------------------------------------------------------- header values
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


# ---------------------------------------------------------------- header pass
class _ClampedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than the bytes left in the file.

    pydicom calls ``read(length)`` with the element length from the file; a damaged length of ~4 GiB
    would make Python allocate 4 GiB up front. Clamping keeps reads to what is really there.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
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


# ---------------------------------------------------------------- zip
def _zip_refusal(archive: Path, what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"Archive {archive} {what}")


def _member_display_name(info: zipfile.ZipInfo) -> str:
    """Printable member name (control characters escaped, at most MAX_SHOWN_NAME characters)."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in info.filename)
    return text if len(text) <= MAX_SHOWN_NAME else text[: MAX_SHOWN_NAME - 3] + "..."


def _check_zip_members(archive: Path, infos: list[zipfile.ZipInfo], limits: ReadLimits) -> None:
    """Refuse hostile members and bombs from the central directory, before anything is written."""
    if len(infos) > limits.max_zip_members:
        raise _zip_refusal(
            archive,
            f"has {len(infos):,} members; the limit is {limits.max_zip_members:,}. "
            "Extract it yourself and pass the folder, or raise COVIDCT_MAX_ZIP_MEMBERS.",
        )
    for info in infos:
        member = PurePosixPath(info.filename.replace("\\", "/"))
        if member.is_absolute() or ".." in member.parts or info.filename[1:3] == ":\\":
            raise _zip_refusal(
                archive,
                (
                    f"has member {_member_display_name(info)!r} that points outside the archive "
                    "(absolute path "
                    "or '..'); refusing to extract it. Re-create the zip with relative paths."
                ),
            )
        if info.flag_bits & ZIP_ENCRYPTED_FLAG:
            raise _zip_refusal(
                archive,
                (
                    f"has encrypted member {_member_display_name(info)!r}; "
                    "covidct does not read password-protected "
                    "zips. Re-create the zip without a password."
                ),
            )
        if info.compress_type not in ZIP_METHODS:
            raise _zip_refusal(
                archive,
                (
                    f"member {_member_display_name(info)!r} uses compression method {info.compress_type}; "
                    "covidct reads "
                    "stored, deflate, bzip2 and lzma members. Re-create the zip with deflate."
                ),
            )
    total = sum(i.file_size for i in infos)
    size = max(archive.stat().st_size, 1)
    if total > limits.max_archive_bytes:
        raise _zip_refusal(
            archive,
            (
                f"expands to {format_bytes(total)}; the limit is "
                f"{format_bytes(limits.max_archive_bytes)}. "
                "Extract it yourself "
                "and pass the folder, or raise COVIDCT_MAX_ARCHIVE_BYTES."
            ),
        )
    if total > limits.max_zip_ratio * size:
        raise _zip_refusal(
            archive,
            (
                f"expands {total / size:,.0f}x ({format_bytes(size)} -> {format_bytes(total)}); the limit is "
                f"{limits.max_zip_ratio:g}x, so it looks like a zip bomb. "
                "If it is genuine, extract it yourself or "
                "raise COVIDCT_MAX_ZIP_RATIO."
            ),
        )


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    """Copy one member, stopping if it yields more bytes than its central-directory size."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise _zip_refusal(
                    archive,
                    (
                        f"member {_member_display_name(info)!r} yields more than its declared "
                        f"{info.file_size:,} bytes; the archive is damaged or hostile. Re-create it."
                    ),
                )
            dst.write(chunk)


def extract_zip_safely(archive: Path, dest: Path, limits: ReadLimits | None = None) -> dict[Path, str]:
    """Extract ``archive`` into ``dest`` under generated names; refuse hostile or oversized archives.

    Members are written as ``dest/<index>`` so that odd names (empty, 300 characters, control
    characters, ``a`` beside ``a/b.dcm``) cannot fail or escape; their zip names are kept for messages.

    Returns:
        {extracted file: member name as shown to the user}.

    Raises:
        UnsafeArchiveError: zip-slip members, encryption, unknown methods, too many members, too large,
            too high an expansion ratio. CorruptFileError: the archive cannot be read.
    """
    limits = limits or ReadLimits.from_env()
    names: dict[Path, str] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if i.filename and not i.is_dir()]  # empty names: skipped
            _check_zip_members(archive, infos, limits)
            for k, info in enumerate(infos):
                base = PurePosixPath(info.filename.replace("\\", "/")).name
                if not base or base.startswith(".") or base.upper() == "DICOMDIR":
                    continue
                target = dest / f"{k:06d}"
                _copy_member(zf, info, target, archive)
                names[target] = _member_display_name(info)
    except CovidCTError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        UnicodeDecodeError,
        struct.error,
        lzma.LZMAError,
    ) as exc:
        raise CorruptFileError(
            f"{archive} is not a readable zip archive ({type(exc).__name__}: {exc}); re-create it."
        ) from exc
    return names


# ---------------------------------------------------------------- series selection
def orientation_name(normal: np.ndarray | None) -> str:
    """'axial', 'coronal', 'sagittal' from the dominant component of the slice normal (LPS)."""
    if normal is None:
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def group_series(headers: list[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Headers grouped by SeriesInstanceUID (in first-seen order)."""
    groups: dict[str, list[SliceHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    return groups


def describe_series(uid: str, slices: list[SliceHeader]) -> SeriesInfo:
    """Summary of one series from its headers."""
    first = slices[0]
    return SeriesInfo(
        uid=uid,
        modality=first.modality,
        description=first.texts.get("SeriesDescription") or "",
        num_slices=len(slices),
        orientation=orientation_name(first.normal),
        image_type=first.image_type,
        rows=first.rows,
        columns=first.columns,
        transfer_syntax=first.transfer_syntax,
    )


def _series_rank(info: SeriesInfo) -> tuple[int, int, int, int, int]:
    """Sort key (higher is better): image, CT, axial, ORIGINAL/PRIMARY, number of slices."""
    return (
        int(info.rows is not None),
        int(info.modality == "CT"),
        int(info.orientation == "axial"),
        int("ORIGINAL" in info.image_type and "PRIMARY" in info.image_type),
        info.num_slices,
    )


def choose_series(groups: dict[str, list[SliceHeader]], series_uid: str | None) -> tuple[str, list[str]]:
    """Pick a series by rules (CT, axial, ORIGINAL/PRIMARY, most slices) or by ``series_uid``.

    Returns:
        (chosen uid, warnings naming the series that were skipped).

    Raises:
        SeriesSelectionError: ``series_uid`` is not among the series found.
    """
    infos = {uid: describe_series(uid, s) for uid, s in groups.items()}
    if series_uid is not None:
        if series_uid not in infos:
            listing = "; ".join(
                f"{i.uid or '<no uid>'} ({i.modality}, {i.num_slices} slices)" for i in infos.values()
            )
            raise SeriesSelectionError(
                f"Series {series_uid!r} is not in this data. Series found: {listing}. "
                "Run `covidct inspect PATH` or list_series(PATH) to see them."
            )
        chosen = series_uid
        reason = "requested by series_uid"
    else:
        chosen = max(infos, key=lambda u: _series_rank(infos[u]))
        reason = "chosen by rules: CT, axial, ORIGINAL/PRIMARY, most slices"
    warnings = [
        f"skipped series {i.uid or '<no uid>'} ({i.modality}, {i.orientation}, {i.num_slices} slices, "
        f"{i.description!r}, image type {'/'.join(i.image_type)}); read {chosen or '<no uid>'} ({reason})"
        for uid, i in infos.items()
        if uid != chosen
    ]
    return chosen, warnings


def check_modality(slices: list[SliceHeader], allow_modality: bool) -> None:
    """Raise ModalityError when the series is not CT and ``allow_modality`` is False."""
    modality = slices[0].modality
    if modality != "CT" and not allow_modality:
        raise ModalityError(
            f"The series is {modality or 'of unknown modality'}, not CT; covidct models are trained on CT. "
            "Pass allow_modality=True (CLI: --allow-modality) to read it anyway."
        )


def check_dimensions(slices: list[SliceHeader]) -> None:
    """Raise InconsistentSeriesError when slices differ in rows/columns or have no image."""
    no_image = [s.name for s in slices if s.rows is None or s.columns is None]
    if no_image:
        raise MissingPixelDataError(
            f"{len(no_image)} DICOM file(s) have no image (no Rows/Columns), e.g. {no_image[0]}; "
            "they are reports or presentation states, not CT slices. Remove them or pass the image series."
        )
    sizes = Counter((s.rows, s.columns) for s in slices)
    if len(sizes) > 1:
        listing = ", ".join(f"{r}x{c}: {n} slices" for (r, c), n in sizes.most_common())
        odd = next(s.name for s in slices if (s.rows, s.columns) != sizes.most_common(1)[0][0])
        raise InconsistentSeriesError(
            f"Slices of series {slices[0].series_uid or '<no uid>'} differ in size ({listing}; e.g. {odd}); "
            "they cannot be stacked. Remove the odd files or choose another series with --series."
        )


# ---------------------------------------------------------------- geometry
@dataclass
class Geometry:
    """Slice order and geometry of a series."""

    order: list[int]
    spacing_z: float
    origin: tuple[float, float, float]
    direction: np.ndarray
    warnings: list[str]


def _fallback_thickness(header: SliceHeader) -> float:
    """Slice spacing when positions cannot give it: SpacingBetweenSlices, SliceThickness, else 1 mm."""
    for value in (header.spacing_between_slices, header.slice_thickness):
        if value is not None and value > 0:
            return abs(value)
    return 1.0


def order_slices(slices: list[SliceHeader]) -> Geometry:
    """Order slices superior -> inferior by position along the normal; detect geometry problems.

    Duplicate positions are dropped (first kept) and reported; gaps, unequal spacing and gantry tilt
    are reported in ``warnings``.
    """
    warnings: list[str] = []
    normal = slices[0].normal
    first = slices[0]
    if normal is None or any(s.ipp is None for s in slices):
        warnings.append(
            "ImagePositionPatient/ImageOrientationPatient missing: slices ordered by InstanceNumber"
        )
        order = sorted(range(len(slices)), key=lambda i: slices[i].instance_number or 0)
        iop = slices[0].iop if slices[0].iop and len(slices[0].iop) == 6 else (1, 0, 0, 0, 1, 0)
        direction = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])]).astype(float)
        ipp = slices[order[0]].ipp or (0.0, 0.0, 0.0)
        return Geometry(order, _fallback_thickness(first), tuple(ipp), direction, warnings)  # type: ignore[arg-type]

    positions = np.array([s.ipp for s in slices], dtype=float)
    # Superior -> inferior: patient z (LPS, +z superior) decreasing; sagittal/coronal keep +normal.
    step_dir = -normal if normal[2] > 0 else normal
    dist = positions @ step_dir
    if not np.all(np.isfinite(dist)):
        raise InvalidHeaderError(
            f"ImagePositionPatient values of series {first.series_uid or '<no uid>'} are too large to "
            "place the slices (e.g. " + ", ".join(f"{s.name}: {s.ipp}" for s in slices[:2]) + "); "
            "fix the positions or re-export the series."
        )
    order = sorted(range(len(slices)), key=lambda i: (dist[i], slices[i].instance_number or 0))
    order, dup_warnings = _drop_duplicates(order, dist, slices)
    warnings += dup_warnings
    d = dist[order]
    steps = np.diff(d)
    spacing_z = float(np.median(steps)) if steps.size else _fallback_thickness(first)
    warnings += _spacing_warnings(steps, d, spacing_z)
    warnings += _tilt_warnings(positions[order], step_dir, first.gantry_tilt)
    iop = slices[0].iop
    assert iop is not None
    direction = np.column_stack([iop[:3], iop[3:], step_dir]).astype(float)
    origin = tuple(float(v) for v in positions[order[0]])
    return Geometry(order, spacing_z, origin, direction, warnings)  # type: ignore[arg-type]


def _drop_duplicates(
    order: list[int], dist: np.ndarray, slices: list[SliceHeader]
) -> tuple[list[int], list[str]]:
    kept: list[int] = []
    warnings = []
    for i in order:
        if kept and abs(dist[i] - dist[kept[-1]]) < DUPLICATE_TOL_MM:
            warnings.append(
                f"duplicate slice position {dist[i]:.2f} mm along the normal: kept {slices[kept[-1]].name}, "
                f"dropped {slices[i].name}"
            )
            continue
        kept.append(i)
    return kept, warnings


def _spacing_warnings(steps: np.ndarray, dist: np.ndarray, spacing: float) -> list[str]:
    if steps.size == 0 or not (math.isfinite(spacing) and spacing > 0):
        return []
    warnings = []
    for k in np.flatnonzero(steps > GAP_FACTOR * spacing):
        missing = int(round(steps[k] / spacing)) - 1
        warnings.append(
            f"gap of {steps[k]:.2f} mm between slices {k} and {k + 1} "
            f"(at {dist[k]:.2f} -> {dist[k + 1]:.2f} mm along the stacking direction; "
            f"median spacing {spacing:.2f} mm): about {missing} slice(s) missing"
        )
    spread = float((steps.max() - steps.min()) / spacing)
    if spread > UNEQUAL_SPACING_TOL:
        warnings.append(
            f"unequal slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm "
            f"(median {spacing:.3f} mm used); resample before 3D models"
        )
    return warnings


def _tilt_warnings(positions: np.ndarray, step_dir: np.ndarray, tilt: float | None) -> list[str]:
    warnings = []
    if tilt is not None and abs(tilt) > TILT_TOL_DEG:
        warnings.append(f"gantry tilt {tilt:.1f} degrees (GantryDetectorTilt)")
    if len(positions) >= 2:
        stack = positions[-1] - positions[0]
        norm = float(np.linalg.norm(stack))
        if norm > 0:
            cos = float(np.clip(abs(stack @ step_dir) / norm, -1.0, 1.0))
            angle = float(np.degrees(np.arccos(cos)))
            if angle > TILT_TOL_DEG:
                warnings.append(
                    f"slices are stacked {angle:.1f} degrees off the slice normal (gantry tilt or sheared "
                    "series); the volume is not rectilinear"
                )
    return warnings


# ---------------------------------------------------------------- pixel pass
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


# ---------------------------------------------------------------- public
def _metadata(source: Path, slices: list[SliceHeader], warnings: list[str]) -> VolumeMetadata:
    first = slices[0]
    texts = first.texts
    return VolumeMetadata(
        source=str(source),
        format="dicom",
        study_uid=texts.get("StudyInstanceUID"),
        series_uid=first.series_uid or None,
        sop_uids=[s.texts.get("SOPInstanceUID") or "" for s in slices],
        modality=first.modality or None,
        manufacturer=texts.get("Manufacturer"),
        kernel=texts.get("ConvolutionKernel"),
        slice_thickness_mm=first.slice_thickness,
        patient_id=texts.get("PatientID"),
        patient_age=texts.get("PatientAge"),
        patient_sex=texts.get("PatientSex"),
        series_description=texts.get("SeriesDescription"),
        files=[s.name for s in slices],
        warnings=warnings,
        extra={"transfer_syntax": first.transfer_syntax},
    )


def _collect(path: Path, tmp: Path, limits: ReadLimits) -> tuple[list[Path], Path, dict[Path, str]]:
    """Files to scan, the root used for display names, and display names of extracted zip members."""
    if path.is_dir():
        files = _candidate_files(path)
        if not files:
            raise NoDataError(f"Folder {path} is empty; give a folder holding a DICOM CT series.")
        return files, path, {}
    if path.suffix.lower() == ".zip":
        names = extract_zip_safely(path, tmp, limits)
        if not names:
            raise NoDataError(f"Archive {path} is empty; give a zip holding a DICOM CT series.")
        return sorted(names, key=lambda p: names[p]), tmp, names
    return [path], path.parent, {}


def list_dicom_series(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> list[SeriesInfo]:
    """Every DICOM series under ``path`` (folder, zip or file), best candidate first."""
    path = Path(path)
    limits = limits or ReadLimits.from_env()
    with tempfile.TemporaryDirectory(prefix="covidct-zip-") as tmp:
        files, root, names = _collect(path, Path(tmp), limits)
        groups = group_series(scan_headers(files, root, names, limits).headers)
    infos = [describe_series(uid, s) for uid, s in groups.items()]
    return sorted(infos, key=_series_rank, reverse=True)


def check_series_budget(slices: list[SliceHeader], limits: ReadLimits) -> None:
    """Refuse, from the headers alone, a series whose decoded size exceeds the budget."""
    first = slices[0]
    check_volume_budget(
        (len(slices), first.rows or 0, first.columns or 0),
        limits,
        f"DICOM series {first.series_uid or '<no uid>'} ({len(slices)} slices)",
    )
    biggest = max(slices, key=lambda s: s.decoded_bytes)
    if biggest.decoded_bytes > limits.max_volume_bytes:
        raise ResourceLimitError(
            f"DICOM file {biggest.name} declares {biggest.frames} frame(s) of "
            f"{biggest.rows}x{biggest.columns} "
            f"x {biggest.samples_per_pixel} sample(s) at {biggest.bits_allocated} bits, which needs "
            f"{format_bytes(biggest.decoded_bytes)} to decode; "
            f"the limit is {format_bytes(limits.max_volume_bytes)}. "
            "If it is genuine, raise COVIDCT_MAX_VOLUME_BYTES."
        )


def read_dicom(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    allow_modality: bool = False,
    workers: int = DEFAULT_WORKERS,
    limits: ReadLimits | None = None,
) -> Volume:
    """Read a DICOM series (folder searched recursively, .zip, or one file) -> `Volume` in HU.

    Files whose header or pixels cannot be read are skipped with a warning naming them, as long as
    they are at most `MAX_BAD_SLICE_FRACTION` of the series; more, and the series is refused.

    Returns:
        Volume with array float32 (z, y, x) HU, z superior -> inferior; spacing (z, y, x) mm with z from
        the slice positions and y, x from PixelSpacing; origin = ImagePositionPatient of the first slice.
    """
    path = Path(path)
    limits = limits or ReadLimits.from_env()
    with tempfile.TemporaryDirectory(prefix="covidct-zip-") as tmp:
        files, root, names = _collect(path, Path(tmp), limits)
        scan = scan_headers(files, root, names, limits)
        groups = group_series(scan.headers)
        chosen, warnings = choose_series(groups, series_uid)
        slices = groups[chosen]
        check_modality(slices, allow_modality)
        check_dimensions(slices)
        check_decoder(slices[0].transfer_syntax)
        check_series_budget(slices, limits)
        geometry = order_slices(slices)
        ordered = [slices[i] for i in geometry.order]
        decoded = decode_slices(ordered, workers=workers)
    n_total = len(ordered) + len(scan.failed)
    skipped = bad_slice_warnings(
        n_total, {**scan.failed, **decoded.failed}, scan.errors + decoded.errors, "DICOM files"
    )
    array, ordered = decoded.array, decoded.headers
    if decoded.failed:  # re-derive positions and gaps from the slices that are left
        geometry = order_slices(ordered)
        array, ordered = array[geometry.order], [ordered[i] for i in geometry.order]
    if ordered[0].pixel_spacing is None:
        geometry.warnings.append("PixelSpacing missing: in-plane spacing set to 1.0 mm")
    pixel_spacing = ordered[0].pixel_spacing or (1.0, 1.0)
    spacing = (abs(geometry.spacing_z), float(pixel_spacing[0]), float(pixel_spacing[1]))
    meta = _metadata(path, ordered, skipped + warnings + geometry.warnings)
    meta.extra["padding_pixels"] = decoded.padding_pixels
    return Volume(
        array=array,
        spacing=spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        is_hu=True,
        meta=meta,
    )
