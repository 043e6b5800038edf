"""Masks a user can open: NIfTI label maps and a DICOM Segmentation on the scan's own grid.

`write_masks(volume, lung_labels, lesion_labels, out_dir, source_datasets=...)` writes

- ``lungs.nii.gz``: uint8 (1 right lung, 2 left lung) and ``lesions.nii.gz``: uint8 (1 ground-glass
  opacity, 2 consolidation), with the affine `covidct convert` writes for the image (one
  implementation: `covidct.io.nifti.write_on_grid`), so they overlay in 3D Slicer / ITK-SNAP;
- ``segmentation.dcm``: a BINARY DICOM Segmentation (highdicom) with four segments (right lung,
  left lung, ground-glass opacity, consolidation) whose frames reference the source series' instances
  by SOP Instance UID, algorithm type AUTOMATIC, algorithm covidct + version.

Masks are never written misaligned: `check_mask_geometry` compares the volume grid with every source
instance (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows/Columns, SOP Instance UID)
and refuses, with `MaskGeometryError`, what one affine cannot represent (unequal slice spacing, gaps,
gantry tilt, missing instances). Arrays are (z, y, x) on the `Volume`'s grid.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from covidct import __version__
from covidct.errors import ConfigError, MaskGeometryError
from covidct.io.nifti import write_on_grid
from covidct.io.volume import Volume

LUNG_NIFTI, LESION_NIFTI, SEG_FILE = "lungs.nii.gz", "lesions.nii.gz", "segmentation.dcm"
RIGHT_LUNG, LEFT_LUNG = 1, 2
"""Values of the lung label map (the analysis's convention: 1 right, 2 left)."""
GGO, CONSOLIDATION = 1, 2
"""Values of the lesion label map (0 none, 1 ground-glass opacity, 2 consolidation)."""
MAX_OFFSET_VOXELS = 0.1
"""A source slice may sit at most this fraction of a voxel (per axis) from where the volume grid puts it."""
MAX_DIRECTION_ERROR = 1e-3
"""Largest difference between a source instance's orientation cosines and the volume's."""
MAX_SPACING_ERROR = 1e-3
"""Largest relative difference between a source's PixelSpacing and the volume's in-plane spacing."""

ALGORITHM_NAME = "covidct quantitative CT"
ALGORITHM_FAMILY = codes.cid7162.MorphologicalOperations
"""HU thresholds and a grey-level opening: no trained weights (DCMR CID 7162)."""
MANUFACTURER = "covidct"
SEG_SERIES_NUMBER = 9903
SEG_SERIES_DESCRIPTION = "covidct lungs and lesions (research use only)"

# Segment property codes, all from pydicom's DCMR code dictionary except consolidation, which the DCMR
# lists do not hold (see CONSOLIDATION_CODE).
ANATOMY = codes.SCT.AnatomicalStructure
ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure
CONSOLIDATION_CODE = Code("95436008", "SCT", "Lung consolidation")
"""SNOMED CT 'Lung consolidation'; not in pydicom's/highdicom's DCMR dictionaries, so taken from a
published SNOMED CT concept table (OMOP vocabulary row 'Lung consolidation', 95436008)."""


TYPE2_DEFAULTS = {"PatientID": "", "PatientName": "", "PatientBirthDate": "", "PatientSex": "",
                  "AccessionNumber": "", "StudyID": "", "StudyDate": "", "StudyTime": "",
                  "ReferringPhysicianName": ""}
"""Type 2 patient/study attributes a derived object (SEG, SR) copies from its source; de-identified
series often lack them, and they are then written empty."""


@dataclass(frozen=True)
class Segment:
    """One segment of the SEG: number, label, category, type, optional laterality modifier, colour."""

    number: int
    label: str
    category: Code
    property_type: Code
    modifier: Code | None
    lab_colour: tuple[float, float, float]
    """CIELab display colour (L 0-100, a, b -128..127)."""


SEGMENTS = (
    Segment(1, "right lung", ANATOMY, codes.SCT.Lung, codes.SCT.Right, (60.0, 30.0, -40.0)),
    Segment(2, "left lung", ANATOMY, codes.SCT.Lung, codes.SCT.Left, (60.0, -30.0, -40.0)),
    Segment(3, "ground-glass opacity", ABNORMAL, codes.DCM.GroundGlassOpacity, None, (85.0, 0.0, 80.0)),
    Segment(4, "consolidation", ABNORMAL, CONSOLIDATION_CODE, None, (50.0, 70.0, 50.0)),
)
"""Segments in SEG order; each is one value of one label map (`segment_masks`)."""


@dataclass(frozen=True)
class MaskFiles:
    """Paths written by `write_masks` (``seg`` None when no SEG was written) and why not."""

    lung_nifti: Path
    lesion_nifti: Path
    seg: Path | None
    seg_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"lung_nifti": str(self.lung_nifti), "lesion_nifti": str(self.lesion_nifti),
                "seg": None if self.seg is None else str(self.seg), "seg_note": self.seg_note}


# ---- geometry ------------------------------------------------------------------------------------
def _floats(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        return None
    try:
        return np.asarray([float(v) for v in value], float)
    except (TypeError, ValueError):
        return None


def _slice_positions(volume: Volume) -> np.ndarray:
    """(S, 3) LPS mm of voxel (k, 0, 0) for every slice k, as the volume grid (and the NIfTI) puts it."""
    d = np.asarray(volume.direction, float).reshape(3, 3)
    k = np.arange(volume.num_slices, dtype=float)[:, None]
    return np.asarray(volume.origin, float)[None] + k * float(volume.spacing[0]) * d[:, 2][None]


def _check_labels(volume: Volume, labels: dict[str, np.ndarray]) -> None:
    for name, arr in labels.items():
        if tuple(arr.shape) != tuple(volume.shape):
            raise MaskGeometryError(
                f"The {name} labels have shape {tuple(arr.shape)} but the scan is {tuple(volume.shape)} "
                "(z, y, x); masks are written only on the scan's own grid. Put them back on the volume "
                "grid first (e.g. `CTAnalysis.lesion_labels()`).")


def _check_instance(ds: Dataset, k: int, expected: np.ndarray, volume: Volume) -> str | None:
    """Why source instance ``ds`` does not sit where the grid puts slice ``k`` (None when it does)."""
    name = f"slice {k + 1} (SOP Instance {ds.get('SOPInstanceUID', '?')})"
    ipp, iop = _floats(ds, "ImagePositionPatient", 3), _floats(ds, "ImageOrientationPatient", 6)
    spacing = _floats(ds, "PixelSpacing", 2)
    if ipp is None or iop is None or spacing is None:
        return f"{name} lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing"
    if (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)) != volume.shape[1:]:
        return f"{name} is {ds.get('Rows')}x{ds.get('Columns')} pixels, the scan {volume.shape[1:]}"
    d = np.asarray(volume.direction, float).reshape(3, 3)
    if np.max(np.abs(iop - np.concatenate([d[:, 0], d[:, 1]]))) > MAX_DIRECTION_ERROR:
        return f"{name} has orientation {iop.round(4).tolist()}, the scan {d[:, :2].T.round(4).tolist()}"
    sz, sy, sx = (float(s) for s in volume.spacing)
    if np.max(np.abs(spacing - (sy, sx)) / (sy, sx)) > MAX_SPACING_ERROR:
        return f"{name} has PixelSpacing {spacing.tolist()}, the scan {[sy, sx]} mm"
    offset = np.abs(d.T @ (ipp - expected)) / np.array([sx, sy, sz])  # in voxels along x, y, z
    if np.max(offset) > MAX_OFFSET_VOXELS:
        return (f"{name} is at {ipp.round(3).tolist()} mm but a regular grid of {sz:g} mm slices puts it at "
                f"{expected.round(3).tolist()} mm ({np.max(offset):.2f} voxel off)")
    return None


def check_mask_geometry(volume: Volume, source_datasets: Sequence[Dataset] | None) -> None:
    """Refuse (`MaskGeometryError`) a scan whose source slices one affine cannot place exactly.

    ``source_datasets``: the source instances in the volume's slice order (headers suffice). Each must
    carry the SOP Instance UID the volume lists for that slice, the volume's Rows/Columns, orientation and
    PixelSpacing, and sit within `MAX_OFFSET_VOXELS` of ``origin + k * spacing_z * direction[:, 2]``:
    unequal spacing, gaps and gantry tilt fail that. None or empty: refused (nothing to reference).
    """
    where = volume.meta.source
    if not source_datasets:
        raise MaskGeometryError(
            f"No source DICOM instances for {where}: a DICOM Segmentation must reference the series it "
            "segments. Give the DICOM series (folder or zip); NIfTI input gets NIfTI masks only.")
    if len(source_datasets) != volume.num_slices:
        raise MaskGeometryError(
            f"{len(source_datasets)} source instances for a scan of {volume.num_slices} slices ({where}); "
            "the masks would not line up with the series, so none are written. Re-read the series.")
    uids = list(volume.meta.sop_uids)
    positions = _slice_positions(volume)
    for k, ds in enumerate(source_datasets):
        if uids and uids[k] and str(ds.get("SOPInstanceUID", "")) != uids[k]:
            raise MaskGeometryError(
                f"Source instance {k + 1} is {ds.get('SOPInstanceUID')} but the scan's slice {k + 1} came "
                f"from {uids[k]} ({where}); give the instances in the scan's slice order.")
        problem = _check_instance(ds, k, positions[k], volume)
        if problem:
            raise MaskGeometryError(
                f"Masks of {where} are not written: {problem}. The slices do not form one regular grid "
                "(unequal spacing, a gap, gantry tilt, or slices of another orientation or pixel size), so a "
                "mask could not be placed exactly on them. Resample the series to regular slices first.")


# ---- NIfTI ---------------------------------------------------------------------------------------
def write_label_nifti(labels: np.ndarray, volume: Volume, path: str | os.PathLike[str]) -> Path:
    """uint8 (z, y, x) labels on ``volume``'s grid -> NIfTI label map with the volume's affine."""
    _check_labels(volume, {"label": labels})
    return write_on_grid(np.asarray(labels).astype(np.uint8), volume, path, intent="label")


# ---- DICOM Segmentation --------------------------------------------------------------------------
def with_type2_defaults(source: Dataset) -> Dataset:
    """A shallow copy of a source header with every missing `TYPE2_DEFAULTS` attribute set empty."""
    out = source.copy()
    for key, default in TYPE2_DEFAULTS.items():
        if out.get(key) is None:
            setattr(out, key, default)
    return out


def _require_highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise ConfigError("Writing a DICOM Segmentation needs highdicom: pip install 'covidct[dicom-net]'. "
                          "The NIfTI masks need nothing more.") from None
    return highdicom


def segment_masks(lung_labels: np.ndarray, lesion_labels: np.ndarray) -> np.ndarray:
    """(z, y, x, 4) uint8 binary masks, one per `SEGMENTS` entry (right, left, GGO, consolidation).

    A view of a (4, z, y, x) array: each segment's frames are contiguous, and highdicom's overlap check
    (a sum over the segment axis) adds four contiguous planes, ~5x faster than over a contiguous last axis.
    """
    lung, lesion = np.asarray(lung_labels), np.asarray(lesion_labels)
    out = np.empty((len(SEGMENTS), *lung.shape), np.uint8)
    for i, (labels, value) in enumerate(((lung, RIGHT_LUNG), (lung, LEFT_LUNG), (lesion, GGO),
                                         (lesion, CONSOLIDATION))):
        np.equal(labels, value, out=out[i], casting="unsafe")
    return out.transpose(1, 2, 3, 0)


def _descriptions(hd: Any) -> list[Any]:
    algorithm = hd.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, family=ALGORITHM_FAMILY,
                                                   version=__version__)
    out = []
    for seg in SEGMENTS:
        desc = hd.seg.SegmentDescription(
            segment_number=seg.number, segment_label=seg.label, segmented_property_category=seg.category,
            segmented_property_type=seg.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Lung] if seg.modifier is None else None,
            display_color=hd.color.CIELabColor(*seg.lab_colour))
        if seg.modifier is not None:
            modifier = Dataset()
            modifier.CodeValue = seg.modifier.value
            modifier.CodingSchemeDesignator = seg.modifier.scheme_designator
            modifier.CodeMeaning = seg.modifier.meaning
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
        out.append(desc)
    return out


def build_segmentation(volume: Volume, lung_labels: np.ndarray, lesion_labels: np.ndarray,
                       source_datasets: Sequence[Dataset], *, series_uid: str | None = None,
                       sop_instance_uid: str | None = None) -> Dataset:
    """A BINARY DICOM Segmentation of the four segments, frame k referencing ``source_datasets[k]``.

    Args:
        volume: the scan (its grid is checked against the sources by `check_mask_geometry`).
        lung_labels, lesion_labels: uint8 (z, y, x) on the volume's grid.
        source_datasets: the source instances in the volume's slice order (headers suffice).
        series_uid, sop_instance_uid: fixed UIDs (e.g. derived from the series), else fresh ones.

    Raises:
        MaskGeometryError: labels off the grid or a geometry one affine cannot represent.
        ConfigError: highdicom is not installed.
    """
    _check_labels(volume, {"lung": lung_labels, "lesion": lesion_labels})
    check_mask_geometry(volume, source_datasets)
    hd = _require_highdicom()
    from pydicom.uid import generate_uid

    masks = segment_masks(lung_labels, lesion_labels)
    seg = hd.seg.Segmentation(
        source_images=[with_type2_defaults(ds) for ds in source_datasets], pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=_descriptions(hd),
        series_instance_uid=series_uid or generate_uid(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=ALGORITHM_NAME, software_versions=__version__,
        device_serial_number="0", series_description=SEG_SERIES_DESCRIPTION, omit_empty_frames=True)
    return seg


def read_segmentation_labels(seg: str | os.PathLike[str] | Dataset,
                             sop_uids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A SEG read back with highdicom -> (lung labels, lesion labels), uint8 (z, y, x), slice k being the
    frame(s) that reference ``sop_uids[k]`` (the volume's `meta.sop_uids`)."""
    hd = _require_highdicom()
    obj = hd.seg.segread(seg) if not isinstance(seg, Dataset) else hd.seg.Segmentation.from_dataset(seg)
    pixels = obj.get_pixels_by_source_instance(
        source_sop_instance_uids=list(sop_uids), segment_numbers=[s.number for s in SEGMENTS],
        combine_segments=False, ignore_spatial_locations=False)
    right, left, ggo, cons = (pixels[..., i] > 0 for i in range(len(SEGMENTS)))
    lung = np.where(right, RIGHT_LUNG, np.where(left, LEFT_LUNG, 0)).astype(np.uint8)
    lesion = np.where(cons, CONSOLIDATION, np.where(ggo, GGO, 0)).astype(np.uint8)
    return lung, lesion


# ---- source instances ----------------------------------------------------------------------------
def _headers_in(folder: Path) -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid:
            out.setdefault(uid, ds)
    return out


def volume_source_datasets(volume: Volume) -> list[Dataset] | None:
    """The source headers of a volume, in slice order: None when it was not read from DICOM
    instances; the headers the reader kept (`VolumeMetadata.headers`) when they are the volume's
    instances; else read again from its source path (`source_datasets`, whose errors it raises)."""
    meta = volume.meta
    if meta.format != "dicom" or not meta.sop_uids:
        return None
    kept = list(meta.headers or [])
    if len(kept) == len(meta.sop_uids) and all(
            str(ds.get("SOPInstanceUID", "")) == uid for ds, uid in zip(kept, meta.sop_uids, strict=True)):
        return kept
    return source_datasets(meta.source, meta.sop_uids)


def source_datasets(path: str | os.PathLike[str], sop_uids: Sequence[str]) -> list[Dataset]:
    """The headers of the instances ``sop_uids`` (a volume's `meta.sop_uids`, in slice order) found
    under ``path`` (a DICOM folder, zip or file), in that order.

    Raises:
        MaskGeometryError: no SOP UIDs (not DICOM input) or an instance is not under ``path``.
    """
    path = Path(path)
    if not sop_uids or not all(sop_uids):
        raise MaskGeometryError(f"{path} was not read from DICOM instances with SOP Instance UIDs; a DICOM "
                                "Segmentation needs the source series.")
    if path.is_file() and zipfile.is_zipfile(path):
        from covidct.io.dicom import extract_zip_safely

        with tempfile.TemporaryDirectory(prefix="covidct-seg-") as tmp:
            extract_zip_safely(path, Path(tmp))
            found = _headers_in(Path(tmp))
    else:
        found = _headers_in(path) if path.is_dir() else _headers_in_file(path)
    missing = [uid for uid in sop_uids if uid not in found]
    if missing:
        raise MaskGeometryError(f"{len(missing)} of the {len(sop_uids)} source instances are not under "
                                f"{path} (e.g. {missing[0]}); the SEG must reference every slice.")
    return [found[uid] for uid in sop_uids]


def _headers_in_file(path: Path) -> dict[str, Dataset]:
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return {}
    return {str(ds.get("SOPInstanceUID", "")): ds}


# ---- all together --------------------------------------------------------------------------------
def write_masks(volume: Volume, lung_labels: np.ndarray, lesion_labels: np.ndarray,
                out_dir: str | os.PathLike[str], *, source_datasets: Sequence[Dataset] | None = None,
                seg: bool = True, series_uid: str | None = None,
                sop_instance_uid: str | None = None) -> MaskFiles:
    """Write the NIfTI label maps and (with ``source_datasets`` and ``seg``) the DICOM Segmentation.

    The geometry is checked before anything is written: with source instances, a series one affine
    cannot place is refused for NIfTI and SEG alike (`MaskGeometryError`). Without them (NIfTI input)
    only the NIfTI files are written, on the volume's own affine, and ``seg_note`` says why.
    """
    _check_labels(volume, {"lung": lung_labels, "lesion": lesion_labels})
    if source_datasets:
        check_mask_geometry(volume, source_datasets)
    out = Path(out_dir)
    dataset = None
    if source_datasets and seg:
        dataset = build_segmentation(volume, lung_labels, lesion_labels, source_datasets,
                                     series_uid=series_uid, sop_instance_uid=sop_instance_uid)
    lung = write_label_nifti(lung_labels, volume, out / LUNG_NIFTI)
    lesion = write_label_nifti(lesion_labels, volume, out / LESION_NIFTI)
    if dataset is None:
        note = ("no DICOM Segmentation: the input was not a DICOM series" if not source_datasets
                else "no DICOM Segmentation: not requested")
        return MaskFiles(lung, lesion, None, note)
    seg_path = out / SEG_FILE
    dataset.save_as(seg_path, enforce_file_format=True)
    return MaskFiles(lung, lesion, seg_path)
