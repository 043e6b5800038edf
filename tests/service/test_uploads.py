"""Upload safety without a server: zip-slip, zip bombs, non-DICOM content, size limits."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from covidct.errors import UploadError
from covidct.service.uploads import (
    MB,
    UploadLimits,
    UploadTooLargeError,
    safe_filename,
    store_upload,
)

FAKE_DICOM = b"\0" * 128 + b"DICM" + b"\x02\x00" * 32


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    buf.seek(0)
    return buf


def test_dicom_zip_is_extracted(tmp_path: Path) -> None:
    study = store_upload([("s.zip", _zip({"series/a.dcm": FAKE_DICOM, "series/b.dcm": FAKE_DICOM}))],
                         tmp_path / "job", UploadLimits())
    assert study.is_dir() and len(list(study.rglob("*.dcm"))) == 2


@pytest.mark.parametrize("name", ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "C:\\evil.dcm"])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UploadError, match="zip-slip"):
        store_upload([("s.zip", _zip({name: FAKE_DICOM}))], tmp_path / "job", UploadLimits())
    assert not (tmp_path / "job").exists()
    assert not (tmp_path / "evil.dcm").exists()


def test_zip_bomb_ratio_is_refused(tmp_path: Path) -> None:
    bomb = _zip({"zeros.dcm": FAKE_DICOM + b"\0" * (20 * MB)})
    with pytest.raises(UploadError, match="zip-bomb"):
        store_upload([("b.zip", bomb)], tmp_path / "job", UploadLimits())


def test_zip_member_count_and_total_size_are_limited(tmp_path: Path) -> None:
    many = _zip({f"{i}.dcm": FAKE_DICOM for i in range(20)})
    with pytest.raises(UploadError, match="members"):
        store_upload([("m.zip", many)], tmp_path / "j1", UploadLimits(max_members=10))
    with pytest.raises(UploadError, match="expands"):
        store_upload([("m.zip", _zip({"a.dcm": FAKE_DICOM * 100}))], tmp_path / "j2",
                     UploadLimits(max_uncompressed_bytes=1000))


def test_non_dicom_zip_is_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="no DICOM or NIfTI"):
        store_upload([("x.zip", _zip({"notes.txt": b"hello", "img.png": b"\x89PNG"}))], tmp_path / "job",
                     UploadLimits())


def test_loose_files_must_be_dicom(tmp_path: Path) -> None:
    files = [("a.dcm", io.BytesIO(FAKE_DICOM)), ("b.txt", io.BytesIO(b"text"))]
    with pytest.raises(UploadError, match="not DICOM"):
        store_upload(files, tmp_path / "job", UploadLimits())
    ok = store_upload([("a.dcm", io.BytesIO(FAKE_DICOM)), ("../b.dcm", io.BytesIO(FAKE_DICOM))],
                      tmp_path / "job2", UploadLimits())
    assert sorted(p.name for p in ok.iterdir()) == ["a.dcm", "b.dcm"]


def test_size_limit(tmp_path: Path) -> None:
    with pytest.raises(UploadTooLargeError, match="limit"):
        store_upload([("a.dcm", io.BytesIO(FAKE_DICOM * 10))], tmp_path / "job",
                     UploadLimits(max_upload_bytes=100))


def test_safe_filename() -> None:
    assert safe_filename("../../x/evil name.dcm", 0) == "evilname.dcm"
    assert safe_filename("..", 3) == "file00003"
