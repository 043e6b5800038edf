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

import os
import shutil
import tempfile
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from covidct.errors import (
    CorruptFileError,
    InconsistentSeriesError,
    MissingDecoderError,
    MissingPixelDataError,
    ModalityError,
    NoDataError,
    SeriesSelectionError,
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
MAX_ZIP_BYTES = 8 * 1024**3
"""Refuse archives whose members add up to more than this (zip bomb guard)."""
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


class UnsafeArchiveError(CorruptFileError):
    """A zip archive has members that would be written outside the extraction folder, or is too big."""


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


# ---------------------------------------------------------------- header pass
def _floats(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None


def looks_like_dicom(path: Path) -> bool:
    """True when the file has the 'DICM' magic at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_header(path: Path, name: str | None = None) -> SliceHeader | None:
    """Header of one file (no pixels); None when the file is not DICOM.

    Raises:
        CorruptFileError: the file starts like DICOM but cannot be parsed (truncated, damaged).
    """
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            offset = fh.tell()
    except InvalidDicomError:
        return None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        if looks_like_dicom(path):
            raise CorruptFileError(
                f"DICOM file {path} is damaged or truncated ({type(exc).__name__}: {exc}). "
                "Re-export or re-download it, or remove it from the folder."
            ) from exc
        return None
    if "SOPClassUID" not in ds and looks_like_dicom(path):
        raise CorruptFileError(
            f"DICOM file {path} ends inside its header (no SOP Class UID after the file meta); it is "
            "damaged or truncated. Re-export or re-download it, or remove it from the folder."
        )
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    ipp = _floats(ds.get("ImagePositionPatient"))
    inst = ds.get("InstanceNumber")
    return SliceHeader(
        path=path,
        name=name or path.name,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=str(ds.get("Modality", "") or "").upper(),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
        iop=_floats(ds.get("ImageOrientationPatient")),
        ipp=ipp if ipp is not None and len(ipp) == 3 else None,  # type: ignore[arg-type]
        rows=int(ds.Rows) if "Rows" in ds else None,
        columns=int(ds.Columns) if "Columns" in ds else None,
        instance_number=int(inst) if inst not in (None, "") else None,
        transfer_syntax=tsuid,
        dataset=ds,
        pixel_offset=None if tsuid == DEFLATED_SYNTAX else offset,  # deflated: offset is not in the file
    )


def _candidate_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (recursive), DICOMDIR and hidden files excluded."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.upper() != "DICOMDIR" and not p.name.startswith(".")
    )


def scan_headers(files: list[Path], root: Path) -> list[SliceHeader]:
    """Header pass over ``files``; non-DICOM files are skipped.

    Raises:
        NoDataError: none of the files is DICOM.
    """
    headers = [h for h in (read_header(p, _display_name(p, root)) for p in files) if h is not None]
    if not headers:
        raise NoDataError(
            f"No DICOM files found in {root} ({len(files)} files looked at). "
            "Give a folder, .zip or file holding a DICOM CT series, a NIfTI file or PNG/JPG slices."
        )
    return headers


def _display_name(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
        return str(rel) if str(rel) != "." else path.name
    except ValueError:
        return path.name


# ---------------------------------------------------------------- zip
def extract_zip_safely(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest``, refusing absolute paths, '..' members and huge archives.

    Raises:
        UnsafeArchiveError: a member would land outside ``dest``, or the total size is too large.
        CorruptFileError: the archive cannot be read.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            total = sum(i.file_size for i in infos)
            if total > MAX_ZIP_BYTES:
                raise UnsafeArchiveError(
                    f"Archive {archive} expands to {total / 1e9:.1f} GB "
                    f"(limit {MAX_ZIP_BYTES / 1e9:.0f} GB); "
                    "extract it yourself and pass the folder."
                )
            root = dest.resolve()
            for info in infos:
                member = Path(info.filename)
                target = (root / member).resolve()
                if member.is_absolute() or ".." in member.parts or root not in target.parents:
                    raise UnsafeArchiveError(
                        f"Archive {archive} has member {info.filename!r} that points outside the archive "
                        "(absolute path or '..'); refusing to extract it. "
                        "Re-create the zip with relative paths."
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise CorruptFileError(f"{archive} is not a readable zip archive ({exc}); re-create it.") from exc
    return dest


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
        description=str(first.dataset.get("SeriesDescription", "") or ""),
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


def _fallback_thickness(ds: Dataset) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(key)
        if value not in (None, ""):
            return float(value)
    return 1.0


def order_slices(slices: list[SliceHeader]) -> Geometry:
    """Order slices superior -> inferior by position along the normal; detect geometry problems.

    Duplicate positions are dropped (first kept) and reported; gaps, unequal spacing and gantry tilt
    are reported in ``warnings``.
    """
    warnings: list[str] = []
    normal = slices[0].normal
    first_ds = slices[0].dataset
    if normal is None or any(s.ipp is None for s in slices):
        warnings.append(
            "ImagePositionPatient/ImageOrientationPatient missing: slices ordered by InstanceNumber"
        )
        order = sorted(range(len(slices)), key=lambda i: slices[i].instance_number or 0)
        iop = slices[0].iop if slices[0].iop and len(slices[0].iop) == 6 else (1, 0, 0, 0, 1, 0)
        direction = np.column_stack([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])]).astype(float)
        ipp = slices[order[0]].ipp or (0.0, 0.0, 0.0)
        return Geometry(order, _fallback_thickness(first_ds), tuple(ipp), direction, warnings)  # type: ignore[arg-type]

    positions = np.array([s.ipp for s in slices], dtype=float)
    # Superior -> inferior: patient z (LPS, +z superior) decreasing; sagittal/coronal keep +normal.
    step_dir = -normal if normal[2] > 0 else normal
    dist = positions @ step_dir
    order = sorted(range(len(slices)), key=lambda i: (dist[i], slices[i].instance_number or 0))
    order, dup_warnings = _drop_duplicates(order, dist, slices)
    warnings += dup_warnings
    d = dist[order]
    steps = np.diff(d)
    spacing_z = float(np.median(steps)) if steps.size else _fallback_thickness(first_ds)
    warnings += _spacing_warnings(steps, d, spacing_z)
    warnings += _tilt_warnings(positions[order], step_dir, first_ds)
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
    if steps.size == 0 or spacing <= 0:
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


def _tilt_warnings(positions: np.ndarray, step_dir: np.ndarray, ds: Dataset) -> list[str]:
    warnings = []
    tilt_tag = ds.get("GantryDetectorTilt")
    if tilt_tag not in (None, "") and abs(float(tilt_tag)) > TILT_TOL_DEG:
        warnings.append(f"gantry tilt {float(tilt_tag):.1f} degrees (GantryDetectorTilt)")
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


def _signed_padding(ds: Dataset) -> int | None:
    """PixelPaddingValue as the stored integer (US/SS ambiguity resolved by PixelRepresentation)."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    value = int(value)
    bits = int(ds.get("BitsAllocated", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1 and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _fast_codec() -> Any | None:
    """imagecodecs' lossless-JPEG decoder when installed (optional speed-up), else None."""
    try:
        from imagecodecs import ljpeg_decode
    except ImportError:
        return None
    return ljpeg_decode


def _stored_values(ds: Dataset, transfer_syntax: str) -> np.ndarray:
    """Stored pixel values of a single-frame dataset (fast path for unsigned JPEG Lossless)."""
    codec = _fast_codec() if transfer_syntax in JPEG_LOSSLESS_SYNTAXES else None
    if (
        codec is not None
        and int(ds.get("PixelRepresentation", 0)) == 0
        and int(ds.get("NumberOfFrames", 1)) == 1
    ):
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        stored = np.asarray(codec(frame))
        if stored.shape == (int(ds.Rows), int(ds.Columns)):
            return stored
    return ds.pixel_array


def _read_with_pixels(header: SliceHeader) -> Dataset:
    """The slice's dataset with its pixel data: the header-pass dataset plus the elements from the
    stored pixel offset on (the header is not parsed twice); a full read when the offset is unknown."""
    if header.pixel_offset is None:
        return pydicom.dcmread(header.path)
    from pydicom.filereader import data_element_generator

    head = header.dataset
    with open(header.path, "rb") as fh:
        fh.seek(header.pixel_offset)
        tail = {
            raw.tag: raw
            for raw in data_element_generator(fh, head.original_encoding[0], head.original_encoding[1])
        }
    ds = Dataset({**head._dict, **tail})  # noqa: SLF001 - same construction as pydicom's reader
    ds.file_meta = head.file_meta
    ds.set_original_encoding(*head.original_encoding, head.original_character_set)
    return ds


def decode_slice(header: SliceHeader) -> tuple[np.ndarray, int]:
    """Read and decode one slice -> (float32 (rows, columns) HU, number of padding pixels replaced).

    Raises:
        MissingPixelDataError, CorruptFileError.
    """
    try:
        ds = _read_with_pixels(header)
    except Exception as exc:  # noqa: BLE001
        raise CorruptFileError(f"Cannot read DICOM file {header.name}: {exc}. Re-export it.") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise MissingPixelDataError(
            f"DICOM file {header.name} has no pixel data (PixelData element absent); "
            "remove it from the series or re-export the images."
        )
    try:
        stored = _stored_values(ds, header.transfer_syntax)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on damaged data
        raise CorruptFileError(
            f"Pixel data of {header.name} cannot be decoded ({type(exc).__name__}: {exc}); "
            "the file is probably truncated or damaged. Re-export it."
        ) from exc
    if stored.ndim != 2:
        raise InconsistentSeriesError(
            f"{header.name} holds {stored.shape} pixels (multi-frame or colour); covidct reads "
            "single-frame greyscale CT slices. Convert the series to one file per slice."
        )
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    padding = _signed_padding(ds)
    mask = hu < OUT_OF_FIELD_HU
    if padding is not None:
        mask |= stored == padding
    n_padding = int(np.count_nonzero(mask))
    if n_padding:
        hu[mask] = PADDING_FILL_HU
    return hu, n_padding


def decode_slices(headers: list[SliceHeader], workers: int = DEFAULT_WORKERS) -> tuple[np.ndarray, int]:
    """Decode ``headers`` in order with a thread pool -> (float32 (z, rows, columns) HU, padding pixels)."""
    first = headers[0]
    out = np.empty((len(headers), first.rows or 0, first.columns or 0), dtype=np.float32)

    def work(k: int) -> int:
        out[k], n_padding = decode_slice(headers[k])
        return n_padding

    if workers <= 1 or len(headers) < 4:
        counts = [work(k) for k in range(len(headers))]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            counts = list(pool.map(work, range(len(headers))))
    return out, int(sum(counts))


# ---------------------------------------------------------------- public
def _metadata(source: Path, slices: list[SliceHeader], warnings: list[str]) -> VolumeMetadata:
    ds = slices[0].dataset
    thickness = ds.get("SliceThickness")

    def text(key: str) -> str | None:
        value = ds.get(key)
        return str(value) if value not in (None, "") else None

    return VolumeMetadata(
        source=str(source),
        format="dicom",
        study_uid=text("StudyInstanceUID"),
        series_uid=slices[0].series_uid or None,
        sop_uids=[str(s.dataset.get("SOPInstanceUID", "")) for s in slices],
        modality=slices[0].modality or None,
        manufacturer=text("Manufacturer"),
        kernel=text("ConvolutionKernel"),
        slice_thickness_mm=float(thickness) if thickness not in (None, "") else None,
        patient_id=text("PatientID"),
        patient_age=text("PatientAge"),
        patient_sex=text("PatientSex"),
        series_description=text("SeriesDescription"),
        files=[s.name for s in slices],
        warnings=warnings,
        extra={"transfer_syntax": slices[0].transfer_syntax},
    )


def _collect(path: Path, tmp: Path) -> tuple[list[Path], Path]:
    """Files to scan and the root used for display names."""
    if path.is_dir():
        files = _candidate_files(path)
        if not files:
            raise NoDataError(f"Folder {path} is empty; give a folder holding a DICOM CT series.")
        return files, path
    if path.suffix.lower() == ".zip":
        extract_zip_safely(path, tmp)
        files = _candidate_files(tmp)
        if not files:
            raise NoDataError(f"Archive {path} is empty; give a zip holding a DICOM CT series.")
        return files, tmp
    return [path], path.parent


def list_dicom_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Every DICOM series under ``path`` (folder, zip or file), best candidate first."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="covidct-zip-") as tmp:
        files, root = _collect(path, Path(tmp))
        groups = group_series(scan_headers(files, root))
    infos = [describe_series(uid, s) for uid, s in groups.items()]
    return sorted(infos, key=_series_rank, reverse=True)


def read_dicom(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    allow_modality: bool = False,
    workers: int = DEFAULT_WORKERS,
) -> Volume:
    """Read a DICOM series (folder searched recursively, .zip, or one file) -> `Volume` in HU.

    Returns:
        Volume with array float32 (z, y, x) HU, z superior -> inferior; spacing (z, y, x) mm with z from
        the slice positions and y, x from PixelSpacing; origin = ImagePositionPatient of the first slice.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="covidct-zip-") as tmp:
        files, root = _collect(path, Path(tmp))
        headers = scan_headers(files, root)
        groups = group_series(headers)
        chosen, warnings = choose_series(groups, series_uid)
        slices = groups[chosen]
        check_modality(slices, allow_modality)
        check_dimensions(slices)
        check_decoder(slices[0].transfer_syntax)
        geometry = order_slices(slices)
        ordered = [slices[i] for i in geometry.order]
        array, n_padding = decode_slices(ordered, workers=workers)
    pixel_spacing = _floats(ordered[0].dataset.get("PixelSpacing")) or (1.0, 1.0)
    if ordered[0].dataset.get("PixelSpacing") is None:
        geometry.warnings.append("PixelSpacing missing: in-plane spacing set to 1.0 mm")
    spacing = (abs(geometry.spacing_z), float(pixel_spacing[0]), float(pixel_spacing[1]))
    meta = _metadata(path, ordered, warnings + geometry.warnings)
    meta.extra["padding_pixels"] = n_padding
    return Volume(
        array=array,
        spacing=spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        is_hu=True,
        meta=meta,
    )
