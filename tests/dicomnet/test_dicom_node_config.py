"""DicomListener configuration errors: clear messages, no server left running."""

from __future__ import annotations

import socket
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
