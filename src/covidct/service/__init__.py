"""The product layer: one `Predictor`, a job store, the REST API, the web page and the CLI adapters.

Heavy parts (torch, FastAPI, SQLAlchemy) are imported by the sub-modules that need them, so
``import covidct.service`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Predictor", "StudyResult", "JobStore"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "StudyResult"):
        from covidct.service import predictor

        return getattr(predictor, name)
    if name == "JobStore":
        from covidct.service.store import JobStore

        return JobStore
    raise AttributeError(name)
