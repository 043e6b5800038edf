"""NIfTI (.nii, .nii.gz) <-> `Volume`, reoriented to covidct's (z, y, x) axial order.

covidct's array axes, as in a DICOM axial series shown in LPS: x runs right -> left of the patient
(+L), y anterior -> posterior (+P), z superior -> inferior (+I). NIfTI affines are RAS, so the array
is reoriented to voxel axes (i, j, k) = (L, P, I) with nibabel and transposed to (k, j, i).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from covidct.errors import CorruptFileError, NoDataError
from covidct.io.volume import Volume, VolumeMetadata

TARGET_AXCODES = ("L", "P", "I")
"""nibabel voxel axes (i, j, k) = array (x, y, z) in covidct order."""
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
INT16_MIN, INT16_MAX = -32768, 32767


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a NIfTI file -> Volume (float32 (z, y, x), spacing (z, y, x) mm from the affine).

    Values are taken as HU (CT NIfTI files hold HU after scl_slope/scl_inter).

    Raises:
        NoDataError: the file does not exist. CorruptFileError: nibabel cannot read it or it is not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise NoDataError(f"NIfTI file {path} does not exist.")
    try:
        img = nib.load(str(path))
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(TARGET_AXCODES)
        )
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - nibabel/gzip raise many types on damaged files
        raise CorruptFileError(
            f"Cannot read NIfTI file {path} ({type(exc).__name__}: {exc}); re-export it."
        ) from exc
    data = np.squeeze(data)
    if data.ndim != 3:
        raise CorruptFileError(
            f"NIfTI file {path} has {data.ndim} dimensions {data.shape}; expected a 3D CT volume."
        )
    data = nib.orientations.apply_orientation(data, ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape[:3])
    lps = RAS_TO_LPS @ affine
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / zooms
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)), dtype=np.float32)
    meta = VolumeMetadata(source=str(path), format="nifti", files=[path.name])
    return Volume(
        array=array,
        spacing=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        origin=tuple(float(v) for v in lps[:3, 3]),  # type: ignore[arg-type]
        direction=direction,
        is_hu=True,
        meta=meta,
    )


def volume_affine_ras(volume: Volume) -> np.ndarray:
    """4x4 RAS affine of ``volume`` for voxel axes (i, j, k) = array (x, y, z)."""
    lps = np.eye(4)
    sz, sy, sx = volume.spacing
    lps[:3, :3] = np.asarray(volume.direction, dtype=float) * np.array([sx, sy, sz])
    lps[:3, 3] = volume.origin
    return RAS_TO_LPS @ lps


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write ``volume`` as NIfTI (int16 when values are whole HU in range, else float32).

    Returns:
        The path written. Reading it back with `read_nifti` gives the same array, spacing, origin.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.transpose(volume.array, (2, 1, 0))
    whole = bool(np.all(np.mod(data, 1) == 0)) and data.size > 0
    if whole and data.min() >= INT16_MIN and data.max() <= INT16_MAX:
        data = data.astype(np.int16)
    else:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, volume_affine_ras(volume))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path
