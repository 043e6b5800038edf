"""Optional parts of covidct and the pip extra that installs each (one helper for every command).

``pip install "covidct[serve]"`` and so on; ``covidct[all]`` installs every extra. A command whose extra
is missing raises `MissingExtraError` (the CLI exits with the config-error code and prints the message).
"""

from __future__ import annotations

import importlib

from covidct.errors import MissingExtraError

EXTRAS: dict[str, str] = {
    "serve": "the REST API, web page, worklist database (serve, triage, dicom-listen)",
    "dicom-net": "the DICOM network node and DICOM SR/Secondary Capture export (dicom-listen)",
    "report": "evaluation plots and HTML reports (evaluate, predict, triage)",
    "train": "TensorBoard logs and memory figures during training (train)",
    "export": "ONNX export and the ONNX Runtime backend (export, --backend onnx)",
    "import": "reading released Keras .h5 weights (import-weights)",
    "jpegls": "writing JPEG-LS DICOM (convert --transfer-syntax jpeg-ls)",
    "scale": "archive-scale triage on a Ray cluster (triage --engine ray)",
}
"""Extra name -> what it is for (the README's table says the same)."""


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``."""
    return f'pip install "covidct[{extra}]"'


def require_extra(extra: str, *modules: str, feature: str | None = None) -> None:
    """Import each of ``modules`` (import names, e.g. ``"sqlalchemy"``); if one is missing raise
    `MissingExtraError` naming the missing modules, the extra and the pip command."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    missing = [name for name in modules if not _importable(name)]
    if missing:
        what = feature or EXTRAS[extra]
        raise MissingExtraError(
            f"{what} needs {', '.join(missing)}, which is not installed (the {extra!r} extra). "
            f"Install it with: {install_hint(extra)}"
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
