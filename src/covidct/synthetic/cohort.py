"""Write a synthetic cohort (one study per patient) with a manifest, as a hospital export would look.

Layout under ``out_dir``::

    manifest.csv                 path,label,patient_id,split,source  (paths relative to out_dir)
    labels.csv                   path,label,patient_id               (study -> class)
    studies/<patient_id>/        one DICOM series (fmt='dicom'), or
    studies/<patient_id>.nii.gz  one NIfTI volume (fmt='nifti')
    masks/<patient_id>_lesion.nii.gz   bool lesion mask (uint8 0/1)
    masks/<patient_id>_lungs.nii.gz    lung labels (0 none, 1 right, 2 left)
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covidct.classes import COVID, NORMAL, PNEUMONIA, canonical_class
from covidct.errors import ConfigError
from covidct.io.dicom_write import write_dicom_series
from covidct.io.volume import Volume
from covidct.synthetic.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, make_phantom

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
SOURCE = "synthetic"
MANIFEST_COLUMNS = ("path", "label", "patient_id", "split", "source")
_SHORT = {COVID: "COVID", PNEUMONIA: "CP", NORMAL: "NORMAL"}
FORMATS = ("dicom", "nifti")


def nifti_affine(volume: Volume) -> np.ndarray:
    """4x4 RAS affine of a volume stored as NIfTI data ``array.transpose(2, 1, 0)`` (x, y, z).

    voxel (i, j, k) = (x, y, z index) -> LPS = origin + direction @ (spacing_x i, spacing_y j,
    spacing_z k); RAS = diag(-1, -1, 1) @ LPS.
    """
    d = np.asarray(volume.direction, dtype=float)
    sz, sy, sx = (float(s) for s in volume.spacing)
    lps = np.eye(4)
    lps[:3, :3] = d @ np.diag([sx, sy, sz])
    lps[:3, 3] = np.asarray(volume.origin, dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_nifti_array(array: np.ndarray, like: Volume, path: str | Path) -> Path:
    """Write a (z, y, x) array with ``like``'s geometry as NIfTI (nibabel, RAS affine)."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), nifti_affine(like))
    img.header.set_xyzt_units("mm")
    if array.dtype == np.float32:
        img.header["descrip"] = b"HU" if like.is_hu else b"8-bit"
    nib.save(img, str(path))
    return path


def _split_patients(n: int, rng: np.random.Generator) -> list[str]:
    """Splits for ``n`` patients of one class: about 60/20/20, val and test non-empty when n >= 3."""
    n_val = max(1, round(n * SPLIT_FRACTIONS["val"])) if n >= 3 else 0
    n_test = max(1, round(n * SPLIT_FRACTIONS["test"])) if n >= 3 else (1 if n == 2 else 0)
    splits = ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    rng.shuffle(splits)
    return splits


def make_cohort(
    out_dir: str | Path,
    *,
    n_per_class: int = 4,
    classes: Sequence[str] = ("covid", "cp", "normal"),
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    fmt: str = "dicom",
    transfer_syntax: str = "explicit-le",
) -> Path:
    """Write ``n_per_class`` synthetic patients per class and return the manifest CSV path.

    Splits are by patient and stratified by class (about 60/20/20 train/val/test). Each patient
    has one study; masks go to ``masks/``. Paths in the manifest are relative to ``out_dir``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"Cohort format must be one of {FORMATS}, got {fmt!r}.")
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n_per_class}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for cls in dict.fromkeys(canonical_class(c) for c in classes):
        splits = _split_patients(n_per_class, rng)
        for i in range(n_per_class):
            pid = f"SYN-{_SHORT.get(cls, cls.upper())}-{i:03d}"
            case_seed = int(rng.integers(2**31))
            phantom = make_phantom(cls, shape=shape, spacing=spacing, seed=case_seed)
            phantom.volume.meta.patient_id = pid
            rel = _write_study(phantom.volume, out, pid, fmt, transfer_syntax, case_seed)
            write_nifti_array(phantom.lesion_mask.astype(np.uint8), phantom.volume,
                              out / "masks" / f"{pid}_lesion.nii.gz")
            write_nifti_array(phantom.lung_mask, phantom.volume, out / "masks" / f"{pid}_lungs.nii.gz")
            rows.append({"path": rel, "label": cls, "patient_id": pid, "split": splits[i],
                         "source": SOURCE})
    manifest = out / "manifest.csv"
    _write_csv(manifest, MANIFEST_COLUMNS, rows)
    _write_csv(out / "labels.csv", ("path", "label", "patient_id"), rows)
    return manifest


def _write_study(volume: Volume, out: Path, pid: str, fmt: str, transfer_syntax: str, seed: int) -> str:
    """Write one study; return its path relative to ``out`` (POSIX)."""
    if fmt == "dicom":
        folder = out / "studies" / pid
        write_dicom_series(volume, folder, transfer_syntax=transfer_syntax, seed=seed, patient_id=pid,
                           patient_name=f"Synthetic^{pid}")
        return folder.relative_to(out).as_posix()
    path = write_nifti_array(volume.array.astype(np.float32), volume, out / "studies" / f"{pid}.nii.gz")
    return path.relative_to(out).as_posix()


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
