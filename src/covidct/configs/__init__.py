"""The training configs that ship with covidct: one YAML file per paper recipe (and the demo).

They live inside the package so a wheel install has them: ``covidct train --config covidnet-ct2-s``
finds ``covidct/configs/covidnet-ct2-s.yaml``; a path to any YAML file works too.
``covidct configs`` lists them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from covidct.errors import ConfigError, UnknownNameError, unknown_name_message

CONFIG_SUFFIXES = (".yaml", ".yml")


def _folder() -> Path:
    """The folder of the shipped YAML files (a real folder: setuptools installs package data unzipped)."""
    return Path(str(resources.files(__name__)))


def list_configs() -> list[str]:
    """Names of the shipped configs (file names without .yaml), sorted."""
    return sorted(p.stem for p in _folder().iterdir() if p.suffix in CONFIG_SUFFIXES)


def config_path(name_or_path: str | Path) -> Path:
    """Resolve a config given by shipped name (``covidnet-ct2-s``, with or without .yaml) or by path.

    An existing file wins; otherwise the name is looked up among the shipped configs, and an unknown
    name raises `UnknownNameError` that lists the shipped names and the closest one.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.parent != Path("."):
        raise ConfigError(
            f"Config file {path} does not exist. Pass the path of a YAML file or a shipped config name "
            f"({', '.join(list_configs())}); `covidct configs` lists them."
        )
    stem = path.stem if path.suffix in CONFIG_SUFFIXES else path.name
    shipped = _folder() / f"{stem}.yaml"
    if shipped.is_file():
        return shipped
    message = unknown_name_message("config", stem, list_configs())
    raise UnknownNameError(f"{message} Pass a shipped config name or the path of a YAML file.")
