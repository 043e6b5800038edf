"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every Ray node a test starts binds to 127.0.0.1, never to the machine's network address (read by ray at
# import: set before any test module imports it; `covidct.service.ray_engine.RAY_LOOPBACK_ENV`).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
SHARED_DATA = Path(os.environ.get("COVIDCT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; skips the test (with the reason) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Folder for files a test keeps for humans (screenshots, reports): test-artifacts/."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_backend() -> None:
    """Service tests run models on PyTorch: exporting every test's random checkpoint to ONNX
    would cost seconds each (tests/models/test_backends.py covers the ONNX backend)."""
    os.environ.setdefault("COVIDCT_BACKEND", "torch")


@pytest.fixture(autouse=True, scope="session")
def _limit_threads() -> None:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
