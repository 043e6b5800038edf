"""The readers' entry points turn every file-system `OSError` into a `FileAccessError` (a `CovidCTError`)
that names the path and says what to do."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from covidct.errors import CovidCTError, FileAccessError, NoDataError
from covidct.io import list_series, read_volume
from covidct.io.reader import MAX_PATH_IN_MESSAGE, file_access_error

READERS = {"read_volume": read_volume, "list_series": list_series}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("name", ["a" * 300, "\u00e9" * 200], ids=["300 characters", "200 x e-acute"])
def test_a_name_too_long_is_a_file_access_error(tmp_path: Path, reader, name: str) -> None:
    path = tmp_path / name / "slice.dcm"
    with pytest.raises(FileAccessError, match="longer than the file system allows") as info:
        reader(path)
    message = str(info.value)
    assert str(tmp_path) in message, "the message names the path"
    assert len(message) < MAX_PATH_IN_MESSAGE + 200, "a hostile path is cut in the message"


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_a_file_used_as_a_folder_is_a_file_access_error(tmp_path: Path, reader) -> None:
    (tmp_path / "scan.dcm").write_bytes(b"x")
    with pytest.raises(FileAccessError, match="is a file, not a folder") as info:
        reader(tmp_path / "scan.dcm" / "IM0001.dcm")
    assert "scan.dcm" in str(info.value)


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_a_missing_path_is_still_no_data(tmp_path: Path, reader) -> None:
    with pytest.raises(NoDataError, match="does not exist"):
        reader(tmp_path / "absent")


@pytest.mark.parametrize(("code", "advice"), [
    (errno.EACCES, "permission denied"), (errno.EPERM, "not permitted"), (errno.EIO, "input/output error"),
    (errno.ENOTDIR, "not a folder"), (errno.ENAMETOOLONG, "longer than"), (errno.ENOSPC, "check the path"),
])
def test_every_os_error_becomes_a_covidct_error_naming_the_file(code: int, advice: str) -> None:
    """EACCES and EIO cannot be made for real here (the tests run as root, on a healthy disk)."""
    exc = OSError(code, "strerror text", "/data/study/IM\x1b0001.dcm")
    err = file_access_error(exc, "/data/study")
    assert isinstance(err, CovidCTError)
    assert advice in str(err) and "'/data/study/IM\\x1b0001.dcm'" in str(err)
