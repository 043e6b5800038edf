"""covidct synth / preprocess / slices through typer's CliRunner."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import covidct.cli.data_commands  # noqa: F401  (registers the commands)
from covidct.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    result = runner.invoke(app, ["synth", str(out), "--n", "1", "--classes", "covid,cp",
                                 "--shape", "8,64,64", "--transfer-syntax", "rle", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_synth(cohort):
    rows = list(csv.DictReader(open(cohort / "manifest.csv")))
    assert [r["label"] for r in rows] == ["COVID-19", "Pneumonia"]
    assert len(list((cohort / rows[0]["path"]).iterdir())) == 8


def test_synth_bad_input_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path), "--shape", "8,64"])
    assert result.exit_code != 0 and "--shape" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["synth", str(tmp_path), "--transfer-syntax", "jpeg-lossless",
                                 "--shape", "8,64,64", "--n", "1"])
    assert result.exit_code != 0 and "jpeg-lossless" in result.output


def test_preprocess(cohort, tmp_path):
    study = cohort / "studies" / "SYN-COVID-000"
    result = runner.invoke(app, ["preprocess", str(study), "--recipe", "covidnet-3d", "--out", str(tmp_path),
                                 "-o", "depth=8", "-o", "resize_to=40", "-o", "crop=32"])
    assert result.exit_code == 0, result.output
    x = np.load(tmp_path / "SYN-COVID-000_covidnet-3d.npy")
    assert x.shape == (1, 8, 32, 32)
    assert Image.open(tmp_path / "SYN-COVID-000_covidnet-3d.png").size == (96, 96)
    bad = runner.invoke(app, ["preprocess", str(study), "--recipe", "covidnet", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "covidnet-3d" in bad.output


def test_slices(cohort, tmp_path):
    result = runner.invoke(app, ["slices", str(cohort), "--labels", str(cohort / "labels.csv"),
                                 "--out", str(tmp_path), "--every", "2"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "all_COVIDx_CT.txt").read_text().split("\n")[:-1]
    assert len(lines) == 8  # 2 studies x 4 kept slices
    name, cls, *box = lines[0].split()
    assert cls == "2" and name.startswith("SYN-COVID-000_")
    img = np.asarray(Image.open(tmp_path / "images" / name))
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    x0, y0, x1, y1 = map(int, box)
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert any(line.split()[1] == "1" for line in lines)
    from covidct import io

    records = io.read_covidx_split(tmp_path / "all_COVIDx_CT.txt", tmp_path / "images")
    assert len(records) == 8 and records[0].patient_id == "SYN-COVID-000"
