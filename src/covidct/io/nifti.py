"""NIfTI (.nii, .nii.gz) <-> `Volume`, reoriented to covidct's (z, y, x) axial order.

covidct's array axes, as in a DICOM axial series shown in LPS: x runs right -> left of the patient
(+L), y anterior -> posterior (+P), z superior -> inferior (+I). NIfTI affines are RAS, so the array
is reoriented to voxel axes (i, j, k) = (L, P, I) with nibabel and transposed to (k, j, i).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from covidct.errors import CorruptFileError, CovidCTError, NoDataError, ResourceLimitError, ShapeError
from covidct.io.limits import MIB, ReadLimits, check_volume_budget, format_bytes, is_regular_file
from covidct.io.volume import Volume, VolumeMetadata

TARGET_AXCODES = ("L", "P", "I")
"""nibabel voxel axes (i, j, k) = array (x, y, z) in covidct order."""
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
INT16_MIN, INT16_MAX = -32768, 32767
SCANNER_CODE = 1
"""NIfTI qform/sform code 'scanner': coordinates are the scanner's (DICOM patient space, as RAS)."""
NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES = 348, 540
EXTENDER_BYTES = 4
MAX_NIFTI_HEADER_BYTES = 16 * MIB
"""Header + extensions (vox_offset) larger than this are refused as damaged."""


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _open_raw(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_header_block(path: Path) -> Any:
    """The NIfTI-1/2 header (no extensions), parsed from at most 540 bytes; CorruptFileError if none."""
    try:
        with _open_raw(path) as fh:
            block = fh.read(NIFTI2_HEADER_BYTES + EXTENDER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(
            f"Cannot read NIfTI file {path} ({type(exc).__name__}: {exc}); re-export it."
        ) from exc
    for klass, size in ((nib.Nifti1Header, NIFTI1_HEADER_BYTES), (nib.Nifti2Header, NIFTI2_HEADER_BYTES)):
        if len(block) < size:
            continue
        for order in ("<", ">"):
            if int(np.frombuffer(block[:4], dtype=f"{order}i4")[0]) == size:
                try:
                    return klass(block[:size], endianness=order, check=False)
                except Exception as exc:  # noqa: BLE001 - nibabel raises HeaderDataError and others
                    raise CorruptFileError(
                        f"NIfTI file {path} has a damaged header ({exc}); re-export it."
                    ) from exc
    raise CorruptFileError(
        f"{path} is not a NIfTI-1/2 file (no valid sizeof_hdr); it is damaged or not NIfTI. Re-export it."
    )


def _check_extensions(path: Path, header: Any, vox_offset: int) -> None:
    """Walk the header extensions from their declared sizes and refuse sizes that overrun vox_offset.

    nibabel reads each extension with ``read(esize)``; a damaged esize would allocate gigabytes.
    """
    start = int(header.sizeof_hdr) + EXTENDER_BYTES
    if vox_offset <= start:
        return
    with _open_raw(path) as fh:
        block = fh.read(vox_offset)
    if len(block) < start or block[start - EXTENDER_BYTES] == 0:
        return
    order = header.endianness
    pos = start
    while pos + 8 <= vox_offset:
        esize = int(np.frombuffer(block[pos : pos + 4], dtype=f"{order}i4")[0])
        if esize < 16 or pos + esize > vox_offset:
            raise CorruptFileError(
                f"NIfTI file {path} has a header extension of {esize} bytes at byte {pos} that does not fit "
                f"before the image data (vox_offset {vox_offset}); the header is damaged. Re-export it."
            )
        pos += esize


def check_nifti_header(path: Path, limits: ReadLimits) -> tuple[int, ...]:
    """Validate the header before nibabel reads anything large -> the declared data shape.

    Raises:
        CorruptFileError: damaged header, extensions or dimensions, or more than 3 non-singleton axes.
        ResourceLimitError: the data needs more than the volume budget.
    """
    header = _read_header_block(path)
    try:
        shape = tuple(int(d) for d in header.get_data_shape())
        itemsize = int(header.get_data_dtype().itemsize)
        vox_offset = float(header["vox_offset"])
    except Exception as exc:  # noqa: BLE001 - nibabel raises HeaderDataError and others on bad fields
        raise CorruptFileError(f"NIfTI file {path} has a damaged header ({exc}); re-export it.") from exc
    if not shape or any(d <= 0 for d in shape):
        raise CorruptFileError(
            f"NIfTI file {path} declares dimensions {shape}; expected positive sizes. Re-export it."
        )
    if any(d > 1 for d in shape[3:]):
        raise CorruptFileError(
            f"NIfTI file {path} has dimensions {shape} (4D or more: time points or channels); covidct reads "
            "one 3D CT volume. Extract one volume first (e.g. fslroi or nibabel)."
        )
    if not (np.isfinite(vox_offset) and 0 <= vox_offset <= MAX_NIFTI_HEADER_BYTES):
        raise CorruptFileError(
            f"NIfTI file {path} says its image data starts at byte {vox_offset:g} (vox_offset); at most "
            f"{format_bytes(MAX_NIFTI_HEADER_BYTES)} of header and extensions are accepted. "
            "The header is damaged."
        )
    check_volume_budget(shape[:3], limits, f"NIfTI file {path}")
    raw_bytes = int(np.prod(shape[:3], dtype=np.int64)) * itemsize
    if raw_bytes > limits.max_volume_bytes:
        raise ResourceLimitError(
            f"NIfTI file {path} holds {format_bytes(raw_bytes)} of {header.get_data_dtype()} data; "
            "the limit is "
            f"{format_bytes(limits.max_volume_bytes)}. If it is genuine, raise COVIDCT_MAX_VOLUME_BYTES."
        )
    _check_extensions(path, header, int(vox_offset))
    return shape


def _check_affine(path: Path, affine: np.ndarray) -> None:
    """Refuse an affine whose voxel axes are not finite with non-zero length (spacing 0 or NaN)."""
    lengths = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    if not (np.all(np.isfinite(affine)) and np.all(lengths > 0)):
        raise CorruptFileError(
            f"NIfTI file {path}: voxel spacing (affine column lengths) is {lengths.round(4).tolist()} with "
            f"affine rows {np.asarray(affine)[:3].round(4).tolist()}; expected 3 finite positive numbers. "
            "Fix the sform/qform or pixdim and re-export it."
        )


def _to_three_axes(raw: np.ndarray) -> np.ndarray:
    """(x), (x, y) or (x, y, z, 1, ...) -> (x, y, z)."""
    if raw.ndim > 3:
        raw = raw.reshape(raw.shape[:3])
    while raw.ndim < 3:
        raw = raw[..., np.newaxis]
    return raw


def read_nifti(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> Volume:
    """Read a NIfTI file -> Volume (float32 (z, y, x), spacing (z, y, x) mm from the affine).

    Values are taken as HU (CT NIfTI files hold HU after scl_slope/scl_inter). The header is checked
    first (`check_nifti_header`): dimensions, extensions and the decoded size against the budget, so a
    small .nii.gz cannot inflate to gigabytes. Peak memory is the on-disk data plus one float32 copy.

    Raises:
        NoDataError: the file does not exist. CorruptFileError: nibabel cannot read it or it is not 3D.
        ResourceLimitError: the volume exceeds the budget.
    """
    path = Path(path)
    limits = limits or ReadLimits.from_env()
    if not is_regular_file(path):
        raise NoDataError(f"NIfTI file {path} does not exist or is not a regular file.")
    check_nifti_header(path, limits)
    try:
        img = nib.load(str(path))
        _check_affine(path, img.affine)
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(TARGET_AXCODES)
        )
        proxy = img.dataobj
        raw = _to_three_axes(np.asanyarray(proxy.get_unscaled()))
        oriented = nib.orientations.apply_orientation(raw, ornt)  # flips and transposes: views
        array = np.ascontiguousarray(np.transpose(oriented, (2, 1, 0)), dtype=np.float32)
        del raw, oriented
        slope, inter = float(proxy.slope), float(proxy.inter)
        if slope != 1.0:
            array *= np.float32(slope)
        if inter != 0.0:
            array += np.float32(inter)
        affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, array.shape[::-1])
    except CovidCTError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel/gzip/numpy raise many types on damaged files
        raise CorruptFileError(
            f"Cannot read NIfTI file {path} ({type(exc).__name__}: {exc}); re-export it."
        ) from exc
    lps = RAS_TO_LPS @ affine
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        direction = lps[:3, :3] / zooms
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
    data = volume.array
    whole = bool(np.all(np.mod(data, 1) == 0)) and data.size > 0
    if whole and data.min() >= INT16_MIN and data.max() <= INT16_MAX:
        data = data.astype(np.int16)
    else:
        data = data.astype(np.float32)
    return write_on_grid(data, volume, path)


def write_on_grid(array: np.ndarray, volume: Volume, path: str | os.PathLike[str], *,
                  intent: str | None = None) -> Path:
    """Write a (z, y, x) array that lies on ``volume``'s grid as NIfTI with the volume's affine.

    The one writer of NIfTI files: images (`write_nifti`) and label maps (`covidct.io.masks`) get the
    same affine (`volume_affine_ras`), qform and sform both coded 'scanner', so they overlay in
    3D Slicer / ITK-SNAP. ``intent``: a NIfTI intent name ('label' for label maps) or None.
    """
    if tuple(array.shape) != tuple(volume.shape):
        raise ShapeError(f"An array of shape {tuple(array.shape)} does not lie on the volume grid "
                         f"{tuple(volume.shape)} (z, y, x); resample it to the volume first.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = volume_affine_ras(volume)
    img = nib.Nifti1Image(np.transpose(array, (2, 1, 0)), affine)
    img.set_qform(affine, code=SCANNER_CODE)
    img.set_sform(affine, code=SCANNER_CODE)
    img.header.set_xyzt_units("mm")
    if intent is not None:
        img.header.set_intent(intent)
    nib.save(img, str(path))
    return path
