"""make_cohort: files, manifest, patient-level stratified splits, masks."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from covidct.errors import ConfigError
from covidct.synthetic import make_cohort, make_phantom, nifti_affine

SHAPE = (10, 64, 64)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_dicom_cohort(tmp_path):
    manifest = make_cohort(tmp_path, n_per_class=3, shape=SHAPE, seed=1)
    rows = _rows(manifest)
    assert list(rows[0]) == ["path", "label", "patient_id", "split", "source"]
    assert len(rows) == 9 and len({r["patient_id"] for r in rows}) == 9
    for label in ("COVID-19", "Pneumonia", "Normal"):
        splits = sorted(r["split"] for r in rows if r["label"] == label)
        assert splits == ["test", "train", "val"]  # stratified by class
    for r in rows:
        folder = tmp_path / r["path"]
        assert folder.is_dir() and len(list(folder.iterdir())) == SHAPE[0]
        assert (tmp_path / "masks" / f"{r['patient_id']}_lesion.nii.gz").is_file()
    assert _rows(tmp_path / "labels.csv")[0].keys() == {"path", "label", "patient_id"}


def test_nifti_cohort_and_affine(tmp_path):
    manifest = make_cohort(tmp_path, n_per_class=1, classes=("covid",), shape=SHAPE, fmt="nifti")
    row = _rows(manifest)[0]
    img = nib.load(tmp_path / row["path"])
    assert img.shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert nib.aff2axcodes(img.affine) == ("L", "P", "I")  # x to patient left, y posterior, z down
    mask = nib.load(tmp_path / "masks" / f"{row['patient_id']}_lesion.nii.gz")
    assert np.asarray(mask.dataobj).any()


def test_affine_maps_voxel_zero_to_origin():
    v = make_phantom("normal", shape=SHAPE).volume
    aff = nifti_affine(v)
    ras = aff @ np.array([0, 0, 0, 1.0])
    assert np.allclose(ras[:3], [-v.origin[0], -v.origin[1], v.origin[2]])
    assert np.allclose(np.abs(np.diag(aff)[:3]), [v.spacing[2], v.spacing[1], v.spacing[0]])


def test_bad_format(tmp_path):
    with pytest.raises(ConfigError):
        make_cohort(tmp_path, fmt="png")


def test_cohort_reads_back_with_covidct_io(tmp_path):
    from covidct import io
    for fmt in ("dicom", "nifti"):
        manifest = make_cohort(tmp_path / fmt, n_per_class=1, shape=SHAPE, fmt=fmt, seed=2)
        records = io.read_cohort(manifest)
        assert sorted(r.label for r in records) == ["COVID-19", "Normal", "Pneumonia"]
        vol = io.read_volume(records[0].path)
        assert vol.shape == SHAPE and vol.is_hu
        assert np.allclose(vol.spacing, (2.5, 0.8, 0.8))
        ref = make_phantom(records[0].label, shape=SHAPE).volume  # same geometry for every seed
        assert np.allclose(vol.origin, ref.origin, atol=1e-3)
