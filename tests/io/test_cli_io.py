"""`covidct inspect` and `covidct convert` through typer's runner: JSON output, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import covidct.cli.data_commands  # noqa: F401 - registers inspect/convert
from covidct.cli.app import app
from covidct.io import read_volume
from covidct.io.dicom import decoding as dicom_decoding

from .conftest import make_hu, write_series

runner = CliRunner()


def test_inspect_json(tmp_path: Path) -> None:
    paths = write_series(tmp_path, make_hu((5, 8, 8)), spacing=(2.0, 0.5, 0.5))
    result = runner.invoke(app, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["num_slices"] == 5 and summary["spacing_mm"] == [2.0, 0.5, 0.5]
    assert summary["files"] == [p.name for p in paths] and summary["is_hu"] is True


def test_inspect_table(tmp_path: Path) -> None:
    write_series(tmp_path, make_hu((3, 8, 8)))
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 0 and "num_slices" in result.stdout


def test_convert(tmp_path: Path) -> None:
    hu = make_hu((4, 8, 8))
    write_series(tmp_path / "dcm", hu)
    out = tmp_path / "v.nii.gz"
    result = runner.invoke(app, ["convert", str(tmp_path / "dcm"), str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_volume(out).array, hu)


def _write_mr(d: Path) -> None:
    write_series(d, make_hu((2, 8, 8)), modality="MR")


def _write_text(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "a.txt").write_text("hello")


def _write_truncated(d: Path) -> None:
    paths = write_series(d, make_hu((3, 8, 8)))
    paths[0].write_bytes(paths[0].read_bytes()[:-50])


def _write_no_pixels(d: Path) -> None:
    paths = write_series(d, make_hu((3, 8, 8)))
    ds = pydicom.dcmread(paths[0])
    del ds.PixelData
    ds.save_as(paths[0])


def _write_mixed_sizes(d: Path) -> None:
    write_series(d, make_hu((3, 8, 8)), series_uid="1.2.7")
    write_series(d / "odd", make_hu((1, 8, 6)), series_uid="1.2.7", positions=[-30.0])


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (lambda d: d.mkdir(parents=True, exist_ok=True), [], "is empty"),
        (_write_text, [], "No DICOM files found"),
        (_write_mr, [], "not CT"),
        (lambda d: write_series(d, make_hu((2, 8, 8))), ["--series", "9.9"], "not in this data"),
        (_write_truncated, [], "truncated or damaged"),
        (_write_no_pixels, [], "no pixel data"),
        (_write_mixed_sizes, [], "differ in size"),
    ],
)
def test_inspect_errors_exit_nonzero_without_traceback(tmp_path: Path, setup, extra, message) -> None:
    target = tmp_path / "in"
    setup(target)
    result = runner.invoke(app, ["inspect", str(target), *extra])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_missing_decoder_exits_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path, make_hu((2, 8, 8)), syntax="rle")
    monkeypatch.setattr(dicom_decoding, "decoder_available", lambda ts: False)
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code != 0 and "pip install pylibjpeg-rle" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_allow_modality_flag(tmp_path: Path) -> None:
    _write_mr(tmp_path)
    result = runner.invoke(app, ["inspect", str(tmp_path), "--json", "--allow-modality"])
    assert result.exit_code == 0 and json.loads(result.stdout)["modality"] == "MR"


def test_convert_rejects_non_nifti_output(tmp_path: Path) -> None:
    write_series(tmp_path / "d", make_hu((2, 8, 8)))
    result = runner.invoke(app, ["convert", str(tmp_path / "d"), str(tmp_path / "out.png")])
    assert result.exit_code != 0 and ".nii" in result.output
