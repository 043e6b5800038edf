"""NIfTI label maps and the DICOM Segmentation (`covidct.io.masks`): geometry round trips, dciodvfy,
highdicom read-back, refusals. Scans are written as real DICOM by covidct's own writer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from covidct.errors import MaskGeometryError
from covidct.io import read_volume
from covidct.io.dicom_write import write_dicom_series
from covidct.io.masks import (
    SEGMENTS,
    build_segmentation,
    check_mask_geometry,
    read_segmentation_labels,
    source_datasets,
    volume_source_datasets,
    write_masks,
)
from covidct.io.nifti import RAS_TO_LPS
from covidct.io.volume import Volume

SHAPE = (10, 24, 28)
SPACING = (2.5, 1.5, 1.25)
MARK_A = (slice(1, 4), slice(3, 7), slice(4, 9))  # off centre in z, y and x: any flip moves it
MARK_B = (slice(6, 8), slice(15, 19), slice(18, 23))
HU_A, HU_B, HU_THRESHOLD_A, HU_THRESHOLD_B = 500.0, 1500.0, 200.0, 1000.0
TOLERANCE_MM = 0.01
DCIODVFY = shutil.which("dciodvfy")


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = np.radians(z_deg), np.radians(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _oblique_flipped() -> np.ndarray:
    d = _rotation(25.0, 15.0)
    d[:, 0] *= -1  # columns run towards patient right: a flipped x axis
    return d


DIRECTIONS = {
    "axial-top-down": np.diag([1.0, 1.0, -1.0]),
    "bottom-to-top": np.eye(3),
    "oblique-flipped": _oblique_flipped(),
}


def marker_volume(direction: np.ndarray) -> Volume:
    """Air with two dense boxes (A +500 HU, B +1500 HU) off centre on every axis."""
    arr = np.full(SHAPE, -1000.0, np.float32)
    arr[MARK_A], arr[MARK_B] = HU_A, HU_B
    return Volume(arr, SPACING, origin=(-101.5, -120.25, 48.0), direction=direction)


def labels_from_hu(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Label maps derived from the scan as read: A -> lung 1 / GGO, B -> lung 2 / consolidation."""
    a = (volume.array > HU_THRESHOLD_A) & (volume.array < HU_THRESHOLD_B)
    b = volume.array >= HU_THRESHOLD_B
    labels = (a * 1 + b * 2).astype(np.uint8)
    return labels, labels.copy()


def patient_centroid(volume: Volume, region: tuple[slice, slice, slice]) -> np.ndarray:
    """LPS mm of the centre of ``region`` (z, y, x index slices) of the volume *as written*."""
    idx = np.array([(s.start + s.stop - 1) / 2.0 for s in region])  # z, y, x
    xyz = idx[::-1] * np.array(volume.spacing)[::-1]
    return np.asarray(volume.origin) + np.asarray(volume.direction) @ xyz


def nifti_centroid(path: Path, label: int) -> np.ndarray:
    """LPS mm of the centroid of ``label`` voxels through the file's own affine."""
    img = nib.load(str(path))
    ijk = np.argwhere(np.asarray(img.dataobj) == label).mean(axis=0)
    return (RAS_TO_LPS @ img.affine @ np.append(ijk, 1.0))[:3]


def seg_centroid(path: Path, segment: int) -> np.ndarray:
    """LPS mm of the centroid of ``segment`` through the SEG's own per-frame plane positions."""
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    points = []
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        if int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != segment:
            continue
        ipp = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        for r, c in np.argwhere(frame > 0):
            points.append(ipp + iop[:3] * c * col_mm + iop[3:] * r * row_mm)
    return np.mean(points, axis=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def write_and_read(volume: Volume, folder: Path) -> tuple[Volume, list]:
    write_dicom_series(volume, folder)
    read = read_volume(folder)
    return read, source_datasets(folder, read.meta.sop_uids)


def check_written(files, scan: Volume, written: Volume, sop_uids: list[str]) -> None:
    """Markers in place (patient mm) in both NIfTI files and the SEG; SEG == NIfTI voxel by voxel."""
    for region, label, segment_lung, segment_lesion in ((MARK_A, 1, 1, 3), (MARK_B, 2, 2, 4)):
        expected = patient_centroid(written, region)
        for path in (files.lung_nifti, files.lesion_nifti):
            np.testing.assert_allclose(nifti_centroid(path, label), expected, atol=TOLERANCE_MM)
        for segment in (segment_lung, segment_lesion):
            np.testing.assert_allclose(seg_centroid(files.seg, segment), expected, atol=TOLERANCE_MM)
    seg_lung, seg_lesion = read_segmentation_labels(files.seg, sop_uids)
    for seg_labels, path in ((seg_lung, files.lung_nifti), (seg_lesion, files.lesion_nifti)):
        nifti = np.transpose(np.asarray(nib.load(str(path)).dataobj), (2, 1, 0))
        assert nifti.shape == scan.shape
        for value in (1, 2):
            assert dice(seg_labels == value, nifti == value) == 1.0


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_masks_round_trip_through_dicom(tmp_path: Path, name: str) -> None:
    """Written as DICOM, read back (reordered superior -> inferior), masked: every file puts the markers
    where the written scan had them, in patient mm."""
    written = marker_volume(DIRECTIONS[name])
    scan, sources = write_and_read(written, tmp_path / "dcm")
    lung, lesion = labels_from_hu(scan)
    files = write_masks(scan, lung, lesion, tmp_path / "masks", source_datasets=sources)
    check_written(files, scan, written, scan.meta.sop_uids)


def test_source_headers_are_the_readers_own_in_slice_order(tmp_path: Path) -> None:
    """The reader keeps every slice's header (no second read of the folder for the SEG/SR): they are
    there after the files are gone, in the volume's slice order; headers that do not match the
    volume's instances are not trusted (read again from the source)."""
    written = marker_volume(DIRECTIONS["bottom-to-top"])
    scan, from_disk = write_and_read(written, tmp_path / "dcm")
    assert [ds.SOPInstanceUID for ds in from_disk] == scan.meta.sop_uids
    shutil.rmtree(tmp_path / "dcm")
    kept = volume_source_datasets(scan)
    assert [ds.SOPInstanceUID for ds in kept] == scan.meta.sop_uids
    assert [float(ds.ImagePositionPatient[2]) for ds in kept] == [
        float(ds.ImagePositionPatient[2]) for ds in from_disk]
    scan.meta.headers = kept[::-1]  # out of order: read again, and the folder is gone
    with pytest.raises(MaskGeometryError):
        volume_source_datasets(scan)
    in_memory = Volume(array=np.zeros((3, 4, 4), np.float32), spacing=(1.0, 1.0, 1.0))
    assert volume_source_datasets(in_memory) is None


@pytest.mark.parametrize("name", ["bottom-to-top", "oblique-flipped"])
def test_masks_of_an_in_memory_volume_in_its_own_order(tmp_path: Path, name: str) -> None:
    """A `Volume` whose array runs bottom-to-top (or oblique, flipped), masked as it is: the sources are
    the files the writer made, in the volume's own slice order."""
    scan = marker_volume(DIRECTIONS[name])
    paths = write_dicom_series(scan, tmp_path / "dcm")
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    lung, lesion = labels_from_hu(scan)
    files = write_masks(scan, lung, lesion, tmp_path / "masks", source_datasets=sources)
    check_written(files, scan, scan, [str(ds.SOPInstanceUID) for ds in sources])


def test_nifti_affine_places_every_slice_on_its_source_instance(tmp_path: Path) -> None:
    """Voxel (k, row, column) of the label NIfTI maps to IPP_k + row * col-direction * row spacing +
    column * row-direction * column spacing of the source slice k (oblique, flipped scan)."""
    scan, sources = write_and_read(marker_volume(DIRECTIONS["oblique-flipped"]), tmp_path / "dcm")
    lung, lesion = labels_from_hu(scan)
    files = write_masks(scan, lung, lesion, tmp_path / "masks", source_datasets=sources)
    affine = RAS_TO_LPS @ nib.load(str(files.lung_nifti)).affine
    for k, ds in enumerate(sources):
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        for r, c in ((0, 0), (5, 0), (0, 7), (SHAPE[1] - 1, SHAPE[2] - 1)):
            expected = ipp + iop[:3] * c * col_mm + iop[3:] * r * row_mm
            np.testing.assert_allclose((affine @ [c, r, k, 1.0])[:3], expected, atol=TOLERANCE_MM)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_planted_flip_is_caught(tmp_path: Path, axis: int) -> None:
    """Labels flipped along one axis (the bug a writer could have) land in the wrong place: the
    centroid check of the round-trip tests fails, by far more than the tolerance."""
    scan, sources = write_and_read(marker_volume(DIRECTIONS["bottom-to-top"]), tmp_path / "dcm")
    lung, lesion = labels_from_hu(scan)
    flipped = np.flip(lung, axis=axis).copy()
    files = write_masks(scan, flipped, np.flip(lesion, axis=axis).copy(), tmp_path / "masks",
                        source_datasets=sources)
    with pytest.raises(AssertionError):
        check_written(files, scan, marker_volume(DIRECTIONS["bottom-to-top"]), scan.meta.sop_uids)
    expected = patient_centroid(marker_volume(DIRECTIONS["bottom-to-top"]), MARK_A)
    assert np.linalg.norm(nifti_centroid(files.lung_nifti, 1) - expected) > 1.0
    assert np.linalg.norm(seg_centroid(files.seg, 1) - expected) > 1.0


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_segmentation_passes_dciodvfy_and_carries_codes(tmp_path: Path) -> None:
    scan, sources = write_and_read(marker_volume(DIRECTIONS["oblique-flipped"]), tmp_path / "dcm")
    lung, lesion = labels_from_hu(scan)
    files = write_masks(scan, lung, lesion, tmp_path / "masks", source_datasets=sources)
    run = subprocess.run([DCIODVFY, str(files.seg)], capture_output=True, text=True, timeout=60)
    report = run.stdout + run.stderr
    assert "Segmentation" in report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    ds = pydicom.dcmread(files.seg)
    assert ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {item.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence
                  for item in s.ReferencedInstanceSequence}
    assert referenced == set(scan.meta.sop_uids)
    for group in ds.PerFrameFunctionalGroupsSequence:
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = group.PlanePositionSequence[0].ImagePositionPatient
        k = scan.meta.sop_uids.index(source)
        np.testing.assert_allclose(np.asarray(position, float),
                                   np.asarray(sources[k].ImagePositionPatient, float), atol=1e-3)
    types = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
              s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator) for s in ds.SegmentSequence]
    assert types == [("right lung", "39607008", "SCT"), ("left lung", "39607008", "SCT"),
                     ("ground-glass opacity", "112120", "DCM"), ("consolidation", "95436008", "SCT")]
    sides = [s.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning
             for s in ds.SegmentSequence[:2]]
    assert sides == ["Right", "Left"]
    for s in ds.SegmentSequence:
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        assert s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName.startswith("covidct")
        assert s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
    assert len(ds.SegmentSequence) == len(SEGMENTS)


def _shift_slice(path: Path, shift_mm: np.ndarray) -> None:
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [f"{v:.6g}" for v in np.asarray(ds.ImagePositionPatient, float) + shift_mm]
    ds.save_as(path)


def _refused(tmp_path: Path, scan: Volume, sources: list) -> str:
    lung, lesion = labels_from_hu(scan)
    with pytest.raises(MaskGeometryError) as info:
        write_masks(scan, lung, lesion, tmp_path / "masks", source_datasets=sources)
    assert not (tmp_path / "masks").exists()  # nothing written, not even the NIfTI
    return str(info.value)


def test_a_gap_is_refused(tmp_path: Path) -> None:
    paths = write_dicom_series(marker_volume(DIRECTIONS["axial-top-down"]), tmp_path / "dcm",
                               shuffle_names=False)
    paths[5].unlink()
    scan = read_volume(tmp_path / "dcm")
    message = _refused(tmp_path, scan, source_datasets(tmp_path / "dcm", scan.meta.sop_uids))
    assert "regular grid" in message and "Resample" in message


def test_unequal_spacing_is_refused(tmp_path: Path) -> None:
    paths = write_dicom_series(marker_volume(DIRECTIONS["axial-top-down"]), tmp_path / "dcm",
                               shuffle_names=False)
    for p in paths[6:]:
        _shift_slice(p, np.array([0.0, 0.0, -0.8]))  # 2.5 mm steps, then one of 3.3 mm
    scan = read_volume(tmp_path / "dcm")
    _refused(tmp_path, scan, source_datasets(tmp_path / "dcm", scan.meta.sop_uids))


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    paths = write_dicom_series(marker_volume(DIRECTIONS["axial-top-down"]), tmp_path / "dcm",
                               shuffle_names=False)
    for k, p in enumerate(paths):
        _shift_slice(p, np.array([0.0, 0.5 * k, 0.0]))  # sheared stack: slices not on the normal
    scan = read_volume(tmp_path / "dcm")
    _refused(tmp_path, scan, source_datasets(tmp_path / "dcm", scan.meta.sop_uids))


def test_no_sources_no_seg_but_nifti(tmp_path: Path) -> None:
    scan = marker_volume(DIRECTIONS["axial-top-down"])
    lung, lesion = labels_from_hu(scan)
    with pytest.raises(MaskGeometryError, match="reference the series"):
        build_segmentation(scan, lung, lesion, [])
    with pytest.raises(MaskGeometryError, match="reference the series"):
        check_mask_geometry(scan, None)
    files = write_masks(scan, lung, lesion, tmp_path / "masks")
    assert files.seg is None and "not a DICOM series" in (files.seg_note or "")
    np.testing.assert_allclose(nifti_centroid(files.lung_nifti, 1), patient_centroid(scan, MARK_A),
                               atol=TOLERANCE_MM)


def test_labels_off_the_grid_and_wrong_sources_are_refused(tmp_path: Path) -> None:
    scan, sources = write_and_read(marker_volume(DIRECTIONS["axial-top-down"]), tmp_path / "dcm")
    lung, lesion = labels_from_hu(scan)
    with pytest.raises(MaskGeometryError, match="scan's own grid"):
        write_masks(scan, lung[:, ::2], lesion, tmp_path / "m1", source_datasets=sources)
    with pytest.raises(MaskGeometryError, match="slice order"):
        write_masks(scan, lung, lesion, tmp_path / "m2", source_datasets=sources[::-1])
    with pytest.raises(MaskGeometryError, match="source instances"):
        write_masks(scan, lung, lesion, tmp_path / "m3", source_datasets=sources[:-1])
    with pytest.raises(MaskGeometryError, match="not under"):
        source_datasets(tmp_path / "dcm", [*scan.meta.sop_uids[:-1], "1.2.3.4"])


@pytest.mark.realdata
def test_covid_ct_md_p001_masks(tmp_path: Path, shared_data: Path) -> None:
    """Real JPEG-lossless series: SEG passes dciodvfy, reads back to the NIfTI labels, and the NIfTI
    affine puts every slice on its source instance."""
    folder = shared_data / "covid-ct-md" / "COVID-19" / "P001"
    scan = read_volume(folder)
    sources = source_datasets(folder, scan.meta.sop_uids)
    hu = scan.array
    half = np.zeros(scan.shape, bool)
    half[:, :, scan.shape[2] // 2:] = True
    lung = np.where(hu < -500, np.where(half, 2, 1), 0).astype(np.uint8)
    ggo, dense = (hu >= -700) & (hu < -300), (hu >= -300) & (hu < -100)
    lesion = np.where(ggo, 1, np.where(dense, 2, 0)).astype(np.uint8)
    files = write_masks(scan, lung, lesion, tmp_path / "masks", source_datasets=sources)
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, str(files.seg)], capture_output=True, text=True, timeout=120)
        assert not [x for x in (run.stdout + run.stderr).splitlines() if x.startswith("Error")]
    seg_lung, seg_lesion = read_segmentation_labels(files.seg, scan.meta.sop_uids)
    for seg_labels, path in ((seg_lung, files.lung_nifti), (seg_lesion, files.lesion_nifti)):
        nifti = np.transpose(np.asarray(nib.load(str(path)).dataobj), (2, 1, 0))
        for value in (1, 2):
            assert dice(seg_labels == value, nifti == value) == 1.0
    affine = RAS_TO_LPS @ nib.load(str(files.lung_nifti)).affine
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sources])
    n = scan.num_slices
    mapped = (affine @ np.c_[np.zeros((n, 2)), np.arange(n), np.ones(n)].T).T
    np.testing.assert_allclose(mapped[:, :3], positions, atol=TOLERANCE_MM)
