"""Small phantoms shared by the preprocessing tests."""

from __future__ import annotations

import pytest

from covidct.synthetic import make_phantom


@pytest.fixture(scope="session")
def small_phantom():
    """COVID phantom (12, 96, 96) at (5, 1.6, 1.6) mm: the same anatomy on a coarser grid."""
    return make_phantom("covid", shape=(12, 96, 96), spacing=(5.0, 1.6, 1.6), seed=0)
