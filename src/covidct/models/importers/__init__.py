"""Released weights from other frameworks -> ordinary covidct checkpoints.

Two small layers, so the next released model takes one short module:
- a *format reader* per file format (`keras_h5`: Keras HDF5 weight files, read with h5py, no
  TensorFlow) with the layout conversions that format needs (kernels to PyTorch order, the
  channels-last flatten in front of a dense layer);
- a registered *importer* per released model (`covidctnet`: the CovidCTNet 3D CNN classifier) that
  builds the covidct model, maps the file's layers onto it, maps the authors' class order onto
  covidct's, and names the preprocessing recipe the weights were trained with.

`import_weights(name, source, out)` runs an importer and writes a checkpoint whose provenance names
the source file and its sha256; the checkpoint then works wherever a checkpoint works.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidct.errors import NoDataError, UnknownNameError, unknown_name_message

HASH_CHUNK = 1 << 20


@dataclass
class ImportedModel:
    """What an importer returns: a covidct model with the released weights, its recipe and notes."""

    model: Any
    recipe: Any
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Importer:
    """A registered importer: ``load(path) -> ImportedModel`` for one released model in one format."""

    name: str
    file_format: str
    description: str
    load: Callable[[Path], ImportedModel]


_IMPORTERS: dict[str, Importer] = {}


def register_importer(name: str, *, file_format: str, description: str) -> Callable:
    """Decorator registering ``load(path) -> ImportedModel`` as importer ``name``."""

    def decorator(load: Callable[[Path], ImportedModel]) -> Callable[[Path], ImportedModel]:
        _IMPORTERS[name] = Importer(name, file_format, description, load)
        return load

    return decorator


def _load_builtin_importers() -> None:
    from covidct.models.importers import covidctnet  # noqa: F401  (registers itself)


def list_importers() -> list[Importer]:
    """Registered importers, sorted by name."""
    _load_builtin_importers()
    return [_IMPORTERS[name] for name in sorted(_IMPORTERS)]


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; UnknownNameError (with the valid names) otherwise."""
    _load_builtin_importers()
    if name not in _IMPORTERS:
        raise UnknownNameError(unknown_name_message("weights importer", name, sorted(_IMPORTERS)))
    return _IMPORTERS[name]


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_weights(name: str, source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Run importer ``name`` on the released file ``source`` and write a covidct checkpoint to ``out``.

    Raises:
        UnknownNameError: no such importer. NoDataError: ``source`` missing. WeightsError: the file does
        not hold the expected layers or shapes.
    """
    from covidct.models.checkpoint import save_checkpoint

    importer = get_importer(name)
    source = Path(source)
    if not source.is_file():
        raise NoDataError(
            f"Weights file {source} does not exist; give the released {importer.file_format} file."
        )
    imported = importer.load(source)
    provenance = {
        "training_data": imported.provenance.pop("training_data", None),
        "imported_from": {
            "file": source.name,
            "sha256": sha256_of(source),
            "format": importer.file_format,
            "importer": importer.name,
            **imported.provenance,
        },
    }
    return save_checkpoint(out, imported.model, recipe=imported.recipe, provenance=provenance)


__all__ = [
    "ImportedModel",
    "Importer",
    "get_importer",
    "import_weights",
    "list_importers",
    "register_importer",
    "sha256_of",
]
