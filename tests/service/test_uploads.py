"""Upload safety without a server: zip-slip, zip bombs, non-DICOM content, size limits."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from covidct.errors import UploadError
from covidct.service.uploads import (
    MB,
    MultipartReceiver,
    UnsupportedUploadError,
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


BOUNDARY = "xYzBoundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def _multipart(parts: list[tuple[str, str, bytes]]) -> bytes:
    out = b""
    for field_name, filename, data in parts:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field_name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _feed(receiver: MultipartReceiver, body: bytes, piece: int) -> None:
    for i in range(0, len(body), piece):
        receiver.feed(body[i:i + piece])


@pytest.mark.parametrize("piece", [1, 7, 65536])
def test_multipart_receiver_saves_each_file_whatever_the_chunking(tmp_path: Path, piece: int) -> None:
    second = bytes(range(256)) * 3 + b"\r\n--xYzBoundar"  # looks like a boundary, is not one
    body = _multipart([("files", "a.dcm", FAKE_DICOM), ("note", "n.txt", b"ignored"),
                       ("files", "../../b.dcm", second)])
    tmp_path.joinpath("raw").mkdir()
    receiver = MultipartReceiver(MULTIPART, tmp_path / "raw", UploadLimits())
    _feed(receiver, body, piece)
    saved = receiver.finish()
    assert [p.name for p in saved] == ["a.dcm", "b.dcm"]
    assert saved[0].read_bytes() == FAKE_DICOM and saved[1].read_bytes() == second
    assert receiver.body_bytes == len(body)


def test_multipart_receiver_stops_at_the_file_limit(tmp_path: Path) -> None:
    limit = 1000
    tmp_path.joinpath("ok").mkdir()
    at_limit = MultipartReceiver(MULTIPART, tmp_path / "ok", UploadLimits(max_upload_bytes=limit))
    _feed(at_limit, _multipart([("files", "a.dcm", b"x" * limit)]), 100)
    assert at_limit.finish()[0].stat().st_size == limit
    tmp_path.joinpath("big").mkdir()
    over = MultipartReceiver(MULTIPART, tmp_path / "big", UploadLimits(max_upload_bytes=limit))
    body = _multipart([("files", "a.dcm", b"x" * (limit + 1) + b"y" * 10_000)])
    with pytest.raises(UploadTooLargeError, match="limit"):
        _feed(over, body, 100)
    assert over.body_bytes < limit + 300, "reading must stop at the limit"
    assert (tmp_path / "big" / "a.dcm").stat().st_size <= limit


def test_multipart_receiver_refuses_other_bodies(tmp_path: Path) -> None:
    for content_type in (None, "application/zip", "multipart/form-data"):
        with pytest.raises(UnsupportedUploadError, match="multipart/form-data"):
            MultipartReceiver(content_type, tmp_path, UploadLimits())
    cut = MultipartReceiver(MULTIPART, tmp_path, UploadLimits())
    cut.feed(_multipart([("files", "a.dcm", FAKE_DICOM)])[:-10])
    with pytest.raises(UploadError, match="closing multipart boundary"):
        cut.finish()
