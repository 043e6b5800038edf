"""Hostile and broken input (issue 15): typed errors naming what is wrong, budgets checked before
allocating, sane volumes, partial studies, gathered pydicom warnings. Real files written here."""

from __future__ import annotations

import gzip
import json
import os
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

import covidct.cli.data_commands  # noqa: F401 - registers inspect
from covidct.cli.app import app
from covidct.errors import (
    CohortError,
    CorruptFileError,
    CovidCTError,
    InvalidHeaderError,
    ResourceLimitError,
    SpecialFileError,
    UnsafeArchiveError,
)
from covidct.io import read_cohort, read_volume
from covidct.io.limits import GIB, KIB, ReadLimits, format_bytes

from .conftest import make_hu, write_series

runner = CliRunner()


def patch_element(path: Path, tag: tuple[int, int], vr: bytes, value: bytes) -> None:
    """Replace the value of an explicit-VR-LE element with short length (DS, IS, US...) in place."""
    data = path.read_bytes()
    head = struct.pack("<HH", *tag) + vr
    at = data.index(head)
    (old_len,) = struct.unpack("<H", data[at + 6 : at + 8])
    value = value + b" " * (len(value) % 2)
    new = head + struct.pack("<H", len(value)) + value
    path.write_bytes(data[:at] + new + data[at + 8 + old_len :])


RESCALE_SLOPE = (0x0028, 0x1053)
ROWS, COLUMNS = (0x0028, 0x0010), (0x0028, 0x0011)
IPP = (0x0020, 0x0032)


# ---------------------------------------------------------------- header values
def test_bad_rescale_slope_names_tag_and_file(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((3, 8, 8)))
    patch_element(paths[1], RESCALE_SLOPE, b"DS", b"abc")
    with pytest.raises(
        InvalidHeaderError, match=rf"RescaleSlope is 'abc' in {paths[1].name}; expected a number"
    ):
        read_volume(paths[1])


def test_a_4_gib_element_length_is_read_as_what_the_file_holds(tmp_path: Path) -> None:
    """An element claiming ~4 GiB in front of the pixel data of a truncated file: the header pass
    never asks for more memory than the file holds, and reading it is a typed error naming it."""
    import tracemalloc

    from covidct.io.dicom.headers import read_header

    path = write_series(tmp_path, make_hu((3, 8, 8)))[0]
    data = path.read_bytes()
    at = data.index(struct.pack("<HH", 0x7FE0, 0x0010))  # PixelData
    huge = struct.pack("<HH", 0x0019, 0x1010) + b"UT\0\0" + struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(data[:at] + huge + b"x" * 64)
    tracemalloc.start()
    try:
        read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2
    with pytest.raises(CovidCTError, match=path.name):
        read_volume(path)


@pytest.mark.parametrize("value", [b"-inf\\0\\0", b"1e400\\0\\0", b"nan\\1\\2"])
def test_non_finite_position_is_refused(tmp_path: Path, value: bytes) -> None:
    paths = write_series(tmp_path, make_hu((2, 8, 8)))
    patch_element(paths[0], IPP, b"DS", value)
    with pytest.raises(InvalidHeaderError, match="ImagePositionPatient is .* expected 3 numbers"):
        read_volume(paths[0])


def test_header_size_bomb_refused_before_allocating(tmp_path: Path) -> None:
    """Two tiny files declaring 65535 x 65535 would need 32 GiB: refused from the header."""
    paths = write_series(tmp_path, make_hu((2, 8, 8)))
    for p in paths:
        patch_element(p, ROWS, b"US", struct.pack("<H", 65535))
        patch_element(p, COLUMNS, b"US", struct.pack("<H", 65535))
    assert all(p.stat().st_size < 2 * KIB for p in paths)
    with pytest.raises(ResourceLimitError, match=r"2 x 65535 x 65535 .* 32.00 GiB .* limit is 1 GiB"):
        read_volume(tmp_path)


def test_volume_budget_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path, make_hu((4, 16, 16)))  # 4 KiB of float32
    with pytest.raises(ResourceLimitError, match="COVIDCT_MAX_VOLUME_BYTES"):
        read_volume(tmp_path, limits=ReadLimits(max_volume_bytes=2 * KIB))
    monkeypatch.setenv("COVIDCT_MAX_VOLUME_BYTES", "2K")
    with pytest.raises(ResourceLimitError, match="limit is 2 KiB"):
        read_volume(tmp_path)
    monkeypatch.setenv("COVIDCT_MAX_VOLUME_BYTES", "4K")
    assert read_volume(tmp_path).shape == (4, 16, 16)


def test_format_bytes_never_rounds_a_limit_away() -> None:
    assert format_bytes(8 * GIB) == "8 GiB (8,589,934,592 bytes)"
    assert format_bytes(9 * 10**9) == "8.38 GiB (9,000,000,000 bytes)"
    assert format_bytes(GIB + 1024**2) == "1.00 GiB (1,074,790,400 bytes)"  # not mistaken for the 1 GiB limit
    assert format_bytes(300) == "300 B"


# ---------------------------------------------------------------- partial studies
def test_one_bad_dicom_slice_is_skipped_with_a_warning(tmp_path: Path) -> None:
    hu = make_hu((21, 8, 8))
    paths = write_series(tmp_path, hu)
    data = paths[10].read_bytes()
    paths[10].write_bytes(data[:-50])  # pixel data cut short
    vol = read_volume(tmp_path)
    assert vol.shape == (20, 8, 8)
    np.testing.assert_array_equal(vol.array, np.delete(hu, 10, axis=0))
    assert paths[10].name not in vol.meta.files
    assert any(f"skipped unreadable slice {paths[10].name}" in w for w in vol.meta.warnings)
    assert any("gap of" in w for w in vol.meta.warnings)  # the hole is reported
    paths[3].write_bytes(paths[3].read_bytes()[:-50])  # a second bad file: 2 of 21 > 5%
    with pytest.raises(CorruptFileError, match="2 of 21 DICOM files cannot be read"):
        read_volume(tmp_path)


def test_one_corrupt_png_among_21_is_skipped(tmp_path: Path) -> None:
    for k in range(21):
        Image.fromarray(np.full((6, 5), k, np.uint8)).save(tmp_path / f"{k}.png")
    (tmp_path / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    vol = read_volume(tmp_path)
    assert vol.shape == (20, 6, 5) and "7.png" not in vol.meta.files
    assert vol.array[:, 0, 0].tolist() == [k for k in range(21) if k != 7]
    assert any("skipped unreadable slice 7.png" in w for w in vol.meta.warnings)
    (tmp_path / "8.png").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="2 of 21 images"):
        read_volume(tmp_path)


# ---------------------------------------------------------------- zips
def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_limits_report_the_true_limit(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"x.dcm": os.urandom(3000)}, zipfile.ZIP_STORED)
    with pytest.raises(
        UnsafeArchiveError, match=r"2.93 KiB \(3,000 bytes\); the limit is 2 KiB \(2,048 bytes\)"
    ):
        read_volume(archive, limits=ReadLimits(max_archive_bytes=2 * KIB))
    bomb = _zip(tmp_path / "bomb.zip", {"x.dcm": b"\0" * (4 * 1024**2)})
    with pytest.raises(UnsafeArchiveError, match="limit is 100x, so it looks like a zip bomb"):
        read_volume(bomb)


def test_zip_odd_members_are_read_or_refused_cleanly(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", make_hu((3, 8, 8)))
    members = {
        "a": b"x",
        "a/b.dcm": paths[0].read_bytes(),
        "n" * 300: paths[1].read_bytes(),
        "d\x01\u00e9/c.dcm": paths[2].read_bytes(),
    }
    vol = read_volume(_zip(tmp_path / "odd.zip", members))
    assert vol.num_slices == 3 and "a/b.dcm" in vol.meta.files


def test_zip_encrypted_and_damaged_streams(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "e.zip", {"x.dcm": b"y" * 100})
    data = bytearray(archive.read_bytes())
    for at in (6, data.index(b"PK\x01\x02") + 8):  # general-purpose flag, local and central
        data[at] |= 1
    (tmp_path / "e.zip").write_bytes(bytes(data))
    with pytest.raises(UnsafeArchiveError, match="encrypted member 'x.dcm'"):
        read_volume(tmp_path / "e.zip")
    archive = _zip(tmp_path / "z.zip", {"x.dcm": os.urandom(64) * 50})
    data = bytearray(archive.read_bytes())
    data[40:60] = b"\xff" * 20  # inside the deflate stream of the only member
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="not a readable zip"):
        read_volume(archive)


# ---------------------------------------------------------------- deflated DICOM, NIfTI, PIL bombs
def test_deflated_dicom_bomb_refused_before_inflating(tmp_path: Path) -> None:
    path = write_series(tmp_path, make_hu((1, 8, 8)))[0]
    ds = pydicom.dcmread(path)
    ds.add_new((0x0009, 0x1010), "OB", b"\0" * (300 * 1024**2 // 100))  # 3 MiB of zeros
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 64 * KIB
    with pytest.raises(ResourceLimitError, match="inflates beyond .* decompression bomb"):
        read_volume(path, limits=ReadLimits(max_inflated_bytes=1024**2))


def _nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (1.0, 1.0, 2.0)) -> Path:
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    nib.save(img, str(path))
    return path


def _raw_header(shape: tuple[int, ...]) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    header["sform_code"], header["srow_x"], header["srow_y"], header["srow_z"] = (
        1,
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
    )
    return header


def _raw_nifti(path: Path, header: nib.Nifti1Header, data: bytes) -> Path:
    """A .nii.gz written byte by byte (nibabel's writer would repair the header)."""
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + data)
    return path


def test_nifti_nan_voxels_are_replaced_and_warned(tmp_path: Path) -> None:
    data = np.zeros((4, 5, 6), np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    vol = read_volume(_nifti(tmp_path / "n.nii.gz", data))
    assert np.isfinite(vol.array).all() and vol.array.min() == -1024
    assert any("2 voxel(s) were NaN or infinite" in w for w in vol.meta.warnings)


def test_nifti_4d_zero_spacing_and_size_bomb(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="4D or more"):
        read_volume(_nifti(tmp_path / "t.nii.gz", np.zeros((4, 4, 4, 3), np.int16)))
    flat = _raw_header((4, 4, 4))
    flat["sform_code"], flat["srow_y"] = 1, [0, 0, 0, 0]  # y axis of zero length
    _raw_nifti(tmp_path / "z.nii.gz", flat, np.zeros((4, 4, 4), np.int16).tobytes())
    with pytest.raises(CorruptFileError, match="voxel spacing"):
        read_volume(tmp_path / "z.nii.gz")
    bomb = _raw_nifti(tmp_path / "bomb.nii.gz", _raw_header((4096, 4096, 4096)), b"")
    assert bomb.stat().st_size < KIB
    with pytest.raises(ResourceLimitError, match="4096 x 4096 x 4096 voxels"):
        read_volume(bomb)


def test_png_declaring_a_huge_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height (CRC now wrong)
    path.write_bytes(bytes(data))
    with pytest.raises((ResourceLimitError, CorruptFileError), match="bomb.png"):
        read_volume(path)


# ---------------------------------------------------------------- special files, cohorts
def test_fifo_is_refused_without_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(SpecialFileError, match="FIFO"):
        read_volume(fifo)
    csv_fifo = tmp_path / "cohort.csv"
    os.mkfifo(csv_fifo)
    with pytest.raises(SpecialFileError, match="FIFO"):
        read_cohort(csv_fifo)
    with pytest.raises(SpecialFileError, match="device"):
        read_volume("/dev/zero")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin.csv", "path,label,patient_id\nx.png,COVID-19,p\u00e9\n".encode("latin-1"), "not UTF-8"),
        ("big.csv", b'path,label,patient_id\n"' + b"x" * 200_000 + b"\n", "not a readable CSV"),
        ("extra.csv", b"path,label,patient_id\nx.png,COVID-19,p1,oops\n", "line 2: 1 more field"),
        ("split.txt", b"a.png 2 0 0 inf 10\n", "not four finite integers"),
        ("nan.txt", b"a.png 2 0 nan 10 10\n", "not four finite integers"),
    ],
)
def test_bad_cohort_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CohortError, match=message):
        read_cohort(tmp_path / name)


# ---------------------------------------------------------------- warnings, CLI
def test_pydicom_warnings_are_gathered_once_not_printed(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    paths = write_series(tmp_path, make_hu((3, 8, 8)))
    for p in paths:
        uid = pydicom.dcmread(p).SeriesInstanceUID.encode()
        p.write_bytes(p.read_bytes().replace(uid, (b"1.2.03.4" + b".0" * 40)[: len(uid)]))
    vol = read_volume(tmp_path)
    uid_warnings = [w for w in vol.meta.warnings if "Invalid value for VR UI" in w]
    assert len(uid_warnings) == 1 and uid_warnings[0].endswith("(3 times)")
    assert "Invalid value" not in capfd.readouterr().err


def test_cli_never_prints_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import covidct.io

    def boom(*args: object, **kw: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(covidct.io, "read_volume", boom)
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "unexpected ZeroDivisionError: planted" in result.output


def test_cli_json_is_valid_for_a_repaired_volume(tmp_path: Path) -> None:
    data = np.full((3, 4, 5), np.nan, np.float32)
    data[0] = 1.0
    path = _nifti(tmp_path / "n.nii.gz", data)
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["hu_range"] == [-1024.0, 1.0]


def test_nibabel_log_records_are_gathered_not_printed(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    header = _raw_header((4, 4, 4))
    header["vox_offset"] = 353.3  # not divisible by 16: nibabel logs a warning on its own stderr handler
    path = tmp_path / "odd.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 200)
    vol = read_volume(path)
    assert any("nibabel.global: vox offset" in w for w in vol.meta.warnings)
    assert "vox offset" not in capfd.readouterr().err


def test_concurrent_reads_restore_warning_state(tmp_path: Path) -> None:
    """Reads in several threads (the service) leave warnings.showwarning and the loggers as they were."""
    import logging
    import threading
    import warnings

    write_series(tmp_path, make_hu((4, 8, 8)))
    before = (warnings.showwarning, list(warnings.filters), logging.getLogger("nibabel.global").handlers[:])
    errors: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(10):
                assert read_volume(tmp_path).shape == (4, 8, 8)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read_many) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    after = (warnings.showwarning, list(warnings.filters), logging.getLogger("nibabel.global").handlers[:])
    assert after == before


# Corpus cases (synthetic seeds, seed 0) whose byte flips make pylibjpeg-rle's Rust decoder panic:
# pyo3's PanicException derives from BaseException and used to escape as a crash.
RLE_PANIC_CASES = (720,)


@pytest.mark.parametrize("index", RLE_PANIC_CASES)
def test_a_panicking_rust_decoder_is_a_damaged_slice_not_a_crash(index: int, tmp_path: Path) -> None:
    from tests.fuzz.corpus import make_case, prepare_seeds

    seeds = prepare_seeds(tmp_path / "seeds", None)
    case = make_case(seeds, index, 0, tmp_path / "case")
    assert case.family == "byteflip"
    with pytest.raises(CovidCTError, match="PanicException"):
        read_volume(case.path)
