"""Upload safety: store an uploaded study on disk, refusing what is too big, hostile or not a study.

Accepted: one zip of a DICOM series (or of one NIfTI file), one NIfTI file (.nii / .nii.gz), or
several DICOM files. Refused with `UploadError` (HTTP 400/413): zip-slip members (``../``, absolute
paths), zip bombs (too many members, too much uncompressed data, too high a compression ratio), and
zips or files that hold no DICOM/NIfTI data.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from covidct.errors import UploadError

MB = 1024 * 1024
DICOM_PREAMBLE = 128
DICOM_MAGIC = b"DICM"
NIFTI1_HEADER_SIZE = 348
NIFTI2_HEADER_SIZE = 540
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """Limits on one upload (the server's --max-upload-mb sets ``max_upload_bytes``)."""

    max_upload_bytes: int = 512 * MB
    max_uncompressed_bytes: int = 2048 * MB
    max_members: int = 5000
    max_ratio: float = 200.0
    """Largest allowed uncompressed/compressed size ratio, per member and overall."""


class UploadTooLargeError(UploadError):
    """The upload is larger than the server accepts (HTTP 413)."""


def is_dicom_file(path: Path) -> bool:
    """True when the file has the DICOM Part-10 preamble ('DICM' at byte 128)."""
    try:
        with path.open("rb") as fh:
            fh.seek(DICOM_PREAMBLE)
            return fh.read(4) == DICOM_MAGIC
    except OSError:
        return False


def is_nifti_file(path: Path) -> bool:
    """True when the file starts with a NIfTI-1/2 header (plain or gzip-compressed)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head[:2] == GZIP_MAGIC:
            with gzip.open(path, "rb") as gz:
                head = gz.read(4)
        size = int.from_bytes(head, "little") if len(head) == 4 else 0
        return size in (NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE) or \
            int.from_bytes(head, "big") in (NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def safe_member_name(name: str) -> PurePosixPath:
    """The relative path of a zip member; raises `UploadError` for zip-slip names."""
    if "\x00" in name:
        raise UploadError(f"Zip member {name!r} has a NUL byte in its name; refusing the upload.")
    posix = PurePosixPath(name.replace("\\", "/"))
    windows = PureWindowsPath(name)
    if posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts:
        raise UploadError(
            f"Zip member {name!r} points outside the archive (absolute path or '..'); "
            "refusing the upload (zip-slip). Zip the series folder with relative paths.")
    return posix


def check_zip(zf: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """Validate every member's name and the archive's sizes; returns the file members."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UploadError(f"The zip has {len(infos)} members; at most {limits.max_members} are accepted "
                          "(zip-bomb protection). Send one series per upload.")
    total = 0
    compressed = 0
    files: list[zipfile.ZipInfo] = []
    for info in infos:
        safe_member_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError(f"Zip member {info.filename!r} is a symbolic link; refusing the upload.")
        if info.is_dir():
            continue
        total += info.file_size
        compressed += info.compress_size
        if info.file_size > limits.max_ratio * max(info.compress_size, 1) and info.file_size > MB:
            raise UploadError(
                f"Zip member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x; "
                f"at most {limits.max_ratio:.0f}x is accepted (zip-bomb protection).")
        files.append(info)
    if total > limits.max_uncompressed_bytes:
        raise UploadError(f"The zip expands to {total / MB:.0f} MB; at most "
                          f"{limits.max_uncompressed_bytes / MB:.0f} MB is accepted (zip-bomb protection).")
    if total > MB and total > limits.max_ratio * max(compressed, 1):
        raise UploadError(f"The zip expands {total / max(compressed, 1):.0f}x overall; at most "
                          f"{limits.max_ratio:.0f}x is accepted (zip-bomb protection).")
    if not files:
        raise UploadError("The zip is empty; send a zip of one DICOM series or one NIfTI file.")
    return files


def extract_zip(zip_path: Path, out_dir: Path, limits: UploadLimits) -> Path:
    """Extract a validated zip into ``out_dir`` (sizes are re-counted while writing); returns the
    study path to read (the folder, or the NIfTI file inside)."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"The upload is not a readable zip file ({exc}); send a .zip of a DICOM series, "
                          "a NIfTI file or DICOM files.") from None
    with zf:
        files = check_zip(zf, limits)
        written = 0
        for info in files:
            target = out_dir / safe_member_name(info.filename)
            if not target.resolve().is_relative_to(out_dir.resolve()):
                raise UploadError(f"Zip member {info.filename!r} points outside the archive (zip-slip).")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                while chunk := src.read(COPY_CHUNK):
                    written += len(chunk)
                    if written > limits.max_uncompressed_bytes:
                        raise UploadError("The zip expands beyond the accepted size (zip-bomb protection).")
                    dst.write(chunk)
    return study_path_in(out_dir, what="zip")


def study_path_in(folder: Path, *, what: str) -> Path:
    """The readable study inside an extracted upload: the DICOM folder or a NIfTI file."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    niftis = [p for p in files if p.name.lower().endswith(NIFTI_SUFFIXES) and is_nifti_file(p)]
    dicoms = [p for p in files if is_dicom_file(p)]
    if dicoms:
        return folder
    if len(niftis) == 1:
        return niftis[0]
    if len(niftis) > 1:
        raise UploadError(f"The {what} holds {len(niftis)} NIfTI files; send one study per upload.")
    names = ", ".join(sorted(p.name for p in files)[:5])
    raise UploadError(f"The {what} holds no DICOM or NIfTI files (found: {names or 'nothing'}). "
                      "Send a zip of a DICOM series (files with the 'DICM' preamble), a NIfTI file, "
                      "or the DICOM files themselves.")


def copy_limited(src: BinaryIO, dst_path: Path, budget: int) -> int:
    """Copy a stream to a file, raising `UploadTooLargeError` beyond ``budget`` bytes; returns bytes."""
    n = 0
    with dst_path.open("wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            n += len(chunk)
            if n > budget:
                raise UploadTooLargeError(f"The upload is larger than the {budget / MB:.1f} MB limit; "
                                          "send a smaller study or raise --max-upload-mb.")
            dst.write(chunk)
    return n


def safe_filename(name: str | None, index: int) -> str:
    """A plain file name from a client-supplied name (path parts dropped)."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = "".join(c for c in base if c.isalnum() or c in "._-")
    return base if base and base not in (".", "..") else f"file{index:05d}"


def store_upload(files: list[tuple[str | None, BinaryIO]], job_dir: Path, limits: UploadLimits) -> Path:
    """Save uploaded files under ``job_dir`` and return the study path to read.

    ``files`` are (client file name, stream) pairs. One zip -> extracted; one NIfTI -> kept; else all
    must be DICOM files. On any refusal ``job_dir`` is removed and `UploadError` raised.
    """
    if not files:
        raise UploadError("No file was uploaded; send a zip of a DICOM series, a NIfTI file or DICOM files "
                          "as multipart field 'files'.")
    raw = job_dir / "upload"
    raw.mkdir(parents=True, exist_ok=True)
    try:
        budget = limits.max_upload_bytes
        saved: list[Path] = []
        for i, (name, stream) in enumerate(files):
            target = raw / safe_filename(name, i)
            if target.exists():
                target = raw / f"{i:05d}_{target.name}"
            budget -= copy_limited(stream, target, budget)
            saved.append(target)
        return _study_from_saved(saved, job_dir, limits)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise


def _study_from_saved(saved: list[Path], job_dir: Path, limits: UploadLimits) -> Path:
    if len(saved) == 1:
        only = saved[0]
        with only.open("rb") as fh:
            head = fh.read(4)
        if head == ZIP_MAGIC or only.name.lower().endswith(".zip"):
            study = extract_zip(only, job_dir / "study", limits)
            only.unlink()
            return study
        if is_nifti_file(only):
            if not only.name.lower().endswith(NIFTI_SUFFIXES):
                fixed = only.with_name(only.name + (".nii.gz" if head[:2] == GZIP_MAGIC else ".nii"))
                only.rename(fixed)
                return fixed
            return only
    not_dicom = [p.name for p in saved if not is_dicom_file(p)]
    if not_dicom:
        raise UploadError(f"{len(not_dicom)} uploaded file(s) are not DICOM, zip or NIfTI "
                          f"(e.g. {not_dicom[0]!r}). Send a zip of a DICOM series, a NIfTI file "
                          "or DICOM files.")
    return saved[0].parent
