"""Upload safety: store an uploaded study on disk, refusing what is too big, hostile or not a study.

Accepted: one zip of a DICOM series (or of one NIfTI file), one NIfTI file (.nii / .nii.gz), or
several DICOM files. Refused with `UploadError` (HTTP 400/413/415): bodies over the size limit (counted
while streaming, chunked or not), malformed multipart bodies, zip-slip members (``../``, absolute
paths), zip bombs (too many members, too much uncompressed data, too high a compression ratio),
unreadable zips (corrupt data, unsupported compression, encryption, names that cannot be files), and
zips or files that hold no DICOM/NIfTI data.

`MultipartReceiver` writes a multipart/form-data body straight into the job folder as it arrives:
nothing goes to a temporary folder, and reading stops at the limit.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

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
UPLOAD_FIELD = "files"
MULTIPART_OVERHEAD_BYTES = 1024 * 1024
"""Body bytes allowed beyond ``max_upload_bytes`` for multipart boundaries and part headers."""
MAX_PART_HEADER_BYTES = 8192
MAX_SAVED_NAME_BYTES = 120
"""Longest saved file name in UTF-8 bytes (file systems allow 255; room is left for an index prefix)."""

ZIP_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError,
                   NotImplementedError, RuntimeError, ValueError, OSError)
"""What `zipfile` raises on corrupt data, unsupported compression (NotImplementedError), encrypted
members (RuntimeError), bad headers (ValueError) and member names that cannot be files (OSError)."""


@dataclass(frozen=True)
class UploadLimits:
    """Limits on one upload (the server's --max-upload-mb sets ``max_upload_bytes``)."""

    max_upload_bytes: int = 512 * MB
    max_uncompressed_bytes: int = 2048 * MB
    max_members: int = 5000
    max_ratio: float = 200.0
    """Largest allowed uncompressed/compressed size ratio, per member and overall."""


    @property
    def max_body_bytes(self) -> int:
        """The most request-body bytes read: the file limit plus multipart framing."""
        return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


class UploadTooLargeError(UploadError):
    """The upload is larger than the server accepts (HTTP 413)."""


class UnsupportedUploadError(UploadError):
    """The request body is not multipart/form-data (HTTP 415)."""


def too_large_message(limits: UploadLimits) -> str:
    return (f"The upload is larger than the {limits.max_upload_bytes / MB:g} MB limit; send a smaller "
            "study (one series per upload) or ask the administrator to raise --max-upload-mb.")


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
    except (OSError, EOFError, zlib.error):
        return False


def safe_member_name(name: str) -> PurePosixPath:
    """The relative path of a zip member; raises `UploadError` for zip-slip names."""
    if "\x00" in name:
        raise UploadError(f"Zip member {name!r} has a NUL byte in its name; refusing the upload.")
    if not name.strip("/. "):
        raise UploadError(f"Zip member {name!r} has no file name; re-create the zip from the series folder.")
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
    except ZIP_READ_ERRORS as exc:
        raise UploadError(f"The upload is not a readable zip file ({_describe(exc)}); send a .zip of a "
                          "DICOM series, a NIfTI file or DICOM files.") from None
    with zf:
        files = check_zip(zf, limits)
        written = 0
        for info in files:
            target = out_dir / safe_member_name(info.filename)
            if target == out_dir or not target.resolve().is_relative_to(out_dir.resolve()):
                raise UploadError(f"Zip member {info.filename!r} has no usable file name or points outside "
                                  "the archive; re-create the zip from the series folder.")
            try:
                written = _extract_member(zf, info, target, written, limits)
            except ZIP_READ_ERRORS as exc:
                raise UploadError(f"Zip member {info.filename[:120]!r} cannot be extracted "
                                  f"({_describe(exc)}); re-create the zip with plain deflate compression, "
                                  "no password, and one file per name.") from None
    return study_path_in(out_dir, what="zip")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, written: int,
                    limits: UploadLimits) -> int:
    """Write one member, counting the true decompressed bytes; returns the running total."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, target.open("wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            written += len(chunk)
            if written > limits.max_uncompressed_bytes:
                raise UploadError(f"The zip expands beyond {limits.max_uncompressed_bytes / MB:g} MB "
                                  "(zip-bomb protection); send one series per upload.")
            dst.write(chunk)
    return written


def _describe(exc: BaseException) -> str:
    """A short, path-free description of a library error for a user message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


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


def unique_target(raw_dir: Path, name: str | None, index: int) -> Path:
    """Where uploaded file number ``index`` is saved (a safe name, never overwriting another)."""
    target = raw_dir / safe_filename(name, index)
    return raw_dir / f"{index:05d}_{target.name}" if target.exists() else target


def safe_filename(name: str | None, index: int) -> str:
    """A plain file name from a client-supplied name: path parts dropped, only ASCII letters, digits
    and ``._-`` kept, at most `MAX_SAVED_NAME_BYTES` long (the end, with the suffix, is kept)."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = "".join(c for c in base if (c.isascii() and c.isalnum()) or c in "._-")
    base = base[-MAX_SAVED_NAME_BYTES:].lstrip(".")
    return base if base else f"file{index:05d}"


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
            target = unique_target(raw, name, i)
            budget -= copy_limited(stream, target, budget)
            saved.append(target)
        return study_from_saved(saved, job_dir, limits)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise


def study_from_saved(saved: list[Path], job_dir: Path, limits: UploadLimits) -> Path:
    """The study path to read from uploaded files already saved under ``job_dir`` (a zip is extracted
    into ``job_dir/study``); raises `UploadError` for anything that is not a study."""
    if not saved:
        raise UploadError(f"No file was uploaded; send a zip of a DICOM series, a NIfTI file or DICOM "
                          f"files as multipart field {UPLOAD_FIELD!r}.")
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


@dataclass
class _Part:
    """The part being parsed: its header lines so far and, for a file part, the open file."""

    headers: dict[str, str] = field(default_factory=dict)
    field_name: bytes = b""
    file: BinaryIO | None = None
    header_bytes: int = 0


class MultipartReceiver:
    """Push parser for one multipart/form-data upload: `feed` the body as it arrives, then `finish`.

    Each part of field ``files`` with a file name is written straight to ``raw_dir`` (a safe name);
    other fields are ignored. Raises `UploadTooLargeError` as soon as the body passes
    ``limits.max_body_bytes`` or the files pass ``limits.max_upload_bytes`` (nothing more is read),
    `UnsupportedUploadError` when the body is not multipart, `UploadError` when it is malformed.
    The caller removes ``raw_dir`` on any error.
    """

    def __init__(self, content_type: str | None, raw_dir: Path, limits: UploadLimits) -> None:
        kind, params = parse_options_header(content_type or "")
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UnsupportedUploadError(
                f"The upload must be multipart/form-data with a boundary (got {content_type or 'none'!r}); "
                f"send the study as multipart field {UPLOAD_FIELD!r}, e.g. curl -F files=@study.zip.")
        self.raw_dir = raw_dir
        self.limits = limits
        self.body_bytes = 0
        self.file_bytes = 0
        self.saved: list[Path] = []
        self.ended = False
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished, "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end, "on_end": self._on_end})

    def feed(self, chunk: bytes) -> None:
        """Parse and store the next piece of the body (any size)."""
        self.body_bytes += len(chunk)
        if self.body_bytes > self.limits.max_body_bytes:
            raise UploadTooLargeError(too_large_message(self.limits))
        if self.ended:
            return  # epilogue after the closing boundary
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise UploadError(f"The upload is not a well-formed multipart body ({exc}); send it with an "
                              "HTTP client's file upload (curl -F files=@study.zip).") from None

    def finish(self) -> list[Path]:
        """The saved files, once the whole body was fed; `UploadError` when it was cut short."""
        self.close()
        if not self.ended:
            raise UploadError("The upload ended before its closing multipart boundary (truncated or "
                              "interrupted); send it again.")
        return self.saved

    def close(self) -> None:
        if self._part.file is not None:
            self._part.file.close()
            self._part.file = None

    # ---- parser callbacks ------------------------------------------------------
    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._add_header_bytes(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._add_header_bytes(end - start)
        self._header_value += data[start:end]

    def _add_header_bytes(self, n: int) -> None:
        self._part.header_bytes += n
        if self._part.header_bytes > MAX_PART_HEADER_BYTES:
            raise UploadError(f"A multipart part has more than {MAX_PART_HEADER_BYTES} bytes of headers; "
                              "send plain file parts.")

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._part.headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        _disposition, params = parse_options_header(self._part.headers.get("content-disposition"))
        self._part.field_name = params.get(b"name", b"")
        filename = params.get(b"filename")
        if self._part.field_name != UPLOAD_FIELD.encode() or filename is None:
            return
        if len(self.saved) >= self.limits.max_members:
            raise UploadError(f"The upload has more than {self.limits.max_members} files; send one "
                              "series per upload, or zip it.")
        target = unique_target(self.raw_dir, filename.decode("utf-8", "replace"), len(self.saved))
        try:
            self._part.file = target.open("wb")
        except OSError as exc:
            raise UploadError(f"Cannot store uploaded file {filename[:120]!r} ({_describe(exc)}); "
                              "rename it to a short plain name and send it again.") from None
        self.saved.append(target)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.file is None:
            return
        self.file_bytes += end - start
        if self.file_bytes > self.limits.max_upload_bytes:
            raise UploadTooLargeError(too_large_message(self.limits))
        self._part.file.write(data[start:end])

    def _on_part_end(self) -> None:
        self.close()

    def _on_end(self) -> None:
        self.ended = True
