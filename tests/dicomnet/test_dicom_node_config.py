"""DicomListener configuration errors: clear messages, no server left running."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
from tests.dicomnet.conftest import LISTENER_AET, LOOPBACK, hu_rule_analysis

from covidct.errors import ConfigError, ServiceError
from covidct.service.dicom_node import DicomListener


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        listener = DicomListener(LISTENER_AET, port, storage_dir=tmp_path, analyse=hu_rule_analysis,
                                 host=LOOPBACK)
        with pytest.raises(ServiceError, match=f"Cannot listen for DICOM on {LOOPBACK}:{port}.*--port"):
            listener.start()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ae_title": "A" * 17}, "Invalid AE title"),
    ({"port": 70000}, "Invalid port 70000"),
    ({"quiet_seconds": 0}, "quiet_seconds must be > 0"),
    ({"destination": ("pacs", 104, "")}, "Invalid destination AE title"),
])
def test_bad_configuration_is_a_clear_error(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DicomListener(storage_dir=tmp_path, analyse=hu_rule_analysis, **kwargs)


def _ct_header(**overrides: Any) -> Any:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 4, 4, 16, 1
    ds.PixelData = bytes(4 * 4 * 2)
    for key, value in overrides.items():
        setattr(ds, key, value)
    return ds, ExplicitVRLittleEndian


@pytest.mark.parametrize(("overrides", "message"), [
    ({"SOPInstanceUID": "../../etc/passwd"}, "not a valid DICOM UID"),
    ({"SeriesInstanceUID": ""}, "no SeriesInstanceUID"),
    ({"PixelData": bytes(10)}, "truncated transfer"),
])
def test_invalid_instances_are_named(overrides: dict[str, Any], message: str) -> None:
    from covidct.service.dicom_node import InvalidInstanceError, validate_instance

    with warnings.catch_warnings():  # pydicom warns about the bad UID this test sets on purpose
        warnings.simplefilter("ignore", UserWarning)
        ds, syntax = _ct_header(**overrides)
    with pytest.raises(InvalidInstanceError, match=message):
        validate_instance(ds, syntax)


def test_a_valid_header_passes() -> None:
    from covidct.service.dicom_node import is_success, validate_instance

    ds, syntax = _ct_header()
    assert validate_instance(ds, syntax) == (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert is_success(0) and is_success(0xB007) and not is_success(0xC000) and not is_success(0xA700)
