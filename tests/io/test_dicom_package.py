"""covidct.io.dicom is a package by concern; every public name of the former module stays importable."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

FORMER_PUBLIC_NAMES = (
    "COPY_CHUNK",
    "DECODER_PACKAGES",
    "DEFAULT_WORKERS",
    "DEFLATED_SYNTAX",
    "DUPLICATE_TOL_MM",
    "DecodedSeries",
    "GAP_FACTOR",
    "Geometry",
    "HeaderScan",
    "INFLATE_CHUNK",
    "JPEG_LOSSLESS_SYNTAXES",
    "MAX_DIMENSION",
    "MAX_POSITION_MM",
    "MAX_SHOWN_NAME",
    "MAX_SPACING_MM",
    "OUT_OF_FIELD_HU",
    "PADDING_FILL_HU",
    "SHOWN_VALUE_CHARS",
    "SeriesInfo",
    "SliceHeader",
    "TEXT_TAGS",
    "TILT_TOL_DEG",
    "UNEQUAL_SPACING_TOL",
    "ZIP_ENCRYPTED_FLAG",
    "ZIP_METHODS",
    "check_decoder",
    "check_dimensions",
    "check_inflated_size",
    "check_modality",
    "check_series_budget",
    "choose_series",
    "decode_slice",
    "decode_slices",
    "decoder_available",
    "describe_series",
    "extract_zip_safely",
    "group_series",
    "header_int",
    "header_number",
    "header_numbers",
    "header_text",
    "list_dicom_series",
    "looks_like_dicom",
    "order_slices",
    "orientation_name",
    "read_dicom",
    "read_header",
    "scan_headers",
)
"""The public names the single module covidct/io/dicom.py defined before the split (issue 23)."""
CONCERNS = ("headers", "archive", "series", "ordering", "decoding", "reader")
MAX_MODULE_LINES = 450


@pytest.mark.parametrize("name", FORMER_PUBLIC_NAMES)
def test_former_names_stay_importable(name: str) -> None:
    module = importlib.import_module("covidct.io.dicom")
    assert getattr(module, name) is not None


def test_one_module_per_concern_each_small() -> None:
    import covidct.io.dicom as package

    folder = Path(package.__file__).parent
    for concern in CONCERNS:
        path = folder / f"{concern}.py"
        assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES, path


def test_series_geometry_is_not_the_model_space_geometry() -> None:
    from covidct.io.dicom import Geometry, SeriesGeometry
    from covidct.preprocessing.geometry import Geometry as ModelGeometry

    assert Geometry is SeriesGeometry and SeriesGeometry is not ModelGeometry
    assert SeriesGeometry.__module__ == "covidct.io.dicom.ordering"
