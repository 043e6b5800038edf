"""covidct: COVID-19 detection in chest CT (research use only, not for diagnosis).

The package is cut by stage of the data flow::

    io -> preprocessing -> models -> training / evaluation / explain -> service

Each layer imports only from layers to its left. ``import covidct`` stays light:
heavy parts (torch models, the server, DICOM networking) load on first use.
"""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "covidct"
"""The distribution name on PyPI (pyproject.toml's `[project] name`): the one source of the version."""

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
    __version__ = "0+unknown"

RESEARCH_USE_STATEMENT = (
    "covidct is a research and decision-support tool, not a certified medical device; "
    "it must not be used on its own for diagnosis."
)

__all__ = ["__version__", "RESEARCH_USE_STATEMENT"]
