"""The DICOM reader: a folder (recursive), a .zip or one file -> `Volume` in HU.

Two passes: 1. the header pass (`headers`) over every file, grouped and chosen by series (`series`);
2. the pixel pass (`decoding`) over the chosen series only, in slice order (`ordering`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from covidct.errors import (
    NoDataError,
    ResourceLimitError,
)
from covidct.io.dicom.archive import extract_zip_safely
from covidct.io.dicom.decoding import DEFAULT_WORKERS, check_decoder, decode_slices
from covidct.io.dicom.headers import SliceHeader, _candidate_files, scan_headers
from covidct.io.dicom.ordering import order_slices
from covidct.io.dicom.series import (
    SeriesInfo,
    _series_rank,
    check_dimensions,
    check_modality,
    choose_series,
    describe_series,
    group_series,
)
from covidct.io.limits import (
    ReadLimits,
    bad_slice_warnings,
    check_volume_budget,
    format_bytes,
)
from covidct.io.volume import Volume, VolumeMetadata


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
    meta.headers = [s.dataset for s in ordered]
    return Volume(
        array=array,
        spacing=spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        is_hu=True,
        meta=meta,
    )
