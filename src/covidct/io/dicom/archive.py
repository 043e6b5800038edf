"""Zip archive safety: refuse hostile archives before extracting a byte.

`extract_zip_safely` checks every member first (paths outside the folder, links, encryption, unknown
compression, declared sizes and ratios against `ReadLimits`), then copies members while counting the bytes
really inflated, so a lying header cannot exhaust the disk.
"""

from __future__ import annotations

import lzma
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from covidct.errors import (
    CorruptFileError,
    CovidCTError,
    UnsafeArchiveError,
)
from covidct.io.limits import (
    ReadLimits,
    format_bytes,
)

MAX_SHOWN_NAME = 120


COPY_CHUNK = 1024 * 1024


ZIP_ENCRYPTED_FLAG = 0x1


ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})


def _zip_refusal(archive: Path, what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"Archive {archive} {what}")


def _member_display_name(info: zipfile.ZipInfo) -> str:
    """Printable member name (control characters escaped, at most MAX_SHOWN_NAME characters)."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in info.filename)
    return text if len(text) <= MAX_SHOWN_NAME else text[: MAX_SHOWN_NAME - 3] + "..."


def _check_zip_members(archive: Path, infos: list[zipfile.ZipInfo], limits: ReadLimits) -> None:
    """Refuse hostile members and bombs from the central directory, before anything is written."""
    if len(infos) > limits.max_zip_members:
        raise _zip_refusal(
            archive,
            f"has {len(infos):,} members; the limit is {limits.max_zip_members:,}. "
            "Extract it yourself and pass the folder, or raise COVIDCT_MAX_ZIP_MEMBERS.",
        )
    for info in infos:
        member = PurePosixPath(info.filename.replace("\\", "/"))
        if member.is_absolute() or ".." in member.parts or info.filename[1:3] == ":\\":
            raise _zip_refusal(
                archive,
                (
                    f"has member {_member_display_name(info)!r} that points outside the archive "
                    "(absolute path "
                    "or '..'); refusing to extract it. Re-create the zip with relative paths."
                ),
            )
        if info.flag_bits & ZIP_ENCRYPTED_FLAG:
            raise _zip_refusal(
                archive,
                (
                    f"has encrypted member {_member_display_name(info)!r}; "
                    "covidct does not read password-protected "
                    "zips. Re-create the zip without a password."
                ),
            )
        if info.compress_type not in ZIP_METHODS:
            raise _zip_refusal(
                archive,
                (
                    f"member {_member_display_name(info)!r} uses compression method {info.compress_type}; "
                    "covidct reads "
                    "stored, deflate, bzip2 and lzma members. Re-create the zip with deflate."
                ),
            )
    total = sum(i.file_size for i in infos)
    size = max(archive.stat().st_size, 1)
    if total > limits.max_archive_bytes:
        raise _zip_refusal(
            archive,
            (
                f"expands to {format_bytes(total)}; the limit is "
                f"{format_bytes(limits.max_archive_bytes)}. "
                "Extract it yourself "
                "and pass the folder, or raise COVIDCT_MAX_ARCHIVE_BYTES."
            ),
        )
    if total > limits.max_zip_ratio * size:
        raise _zip_refusal(
            archive,
            (
                f"expands {total / size:,.0f}x ({format_bytes(size)} -> {format_bytes(total)}); the limit is "
                f"{limits.max_zip_ratio:g}x, so it looks like a zip bomb. "
                "If it is genuine, extract it yourself or "
                "raise COVIDCT_MAX_ZIP_RATIO."
            ),
        )


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    """Copy one member, stopping if it yields more bytes than its central-directory size."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise _zip_refusal(
                    archive,
                    (
                        f"member {_member_display_name(info)!r} yields more than its declared "
                        f"{info.file_size:,} bytes; the archive is damaged or hostile. Re-create it."
                    ),
                )
            dst.write(chunk)


def extract_zip_safely(archive: Path, dest: Path, limits: ReadLimits | None = None) -> dict[Path, str]:
    """Extract ``archive`` into ``dest`` under generated names; refuse hostile or oversized archives.

    Members are written as ``dest/<index>`` so that odd names (empty, 300 characters, control
    characters, ``a`` beside ``a/b.dcm``) cannot fail or escape; their zip names are kept for messages.

    Returns:
        {extracted file: member name as shown to the user}.

    Raises:
        UnsafeArchiveError: zip-slip members, encryption, unknown methods, too many members, too large,
            too high an expansion ratio. CorruptFileError: the archive cannot be read.
    """
    limits = limits or ReadLimits.from_env()
    names: dict[Path, str] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if i.filename and not i.is_dir()]  # empty names: skipped
            _check_zip_members(archive, infos, limits)
            for k, info in enumerate(infos):
                base = PurePosixPath(info.filename.replace("\\", "/")).name
                if not base or base.startswith(".") or base.upper() == "DICOMDIR":
                    continue
                target = dest / f"{k:06d}"
                _copy_member(zf, info, target, archive)
                names[target] = _member_display_name(info)
    except CovidCTError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        UnicodeDecodeError,
        struct.error,
        lzma.LZMAError,
    ) as exc:
        raise CorruptFileError(
            f"{archive} is not a readable zip archive ({type(exc).__name__}: {exc}); re-create it."
        ) from exc
    return names
