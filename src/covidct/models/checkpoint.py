"""Checkpoints: weights + model config + preprocessing recipe + class names + provenance, one file.

The file is a ``torch.save`` dict (loadable with ``weights_only=True``)::

    {format_version, model_name, model_config, state_dict, recipe, class_names, provenance, extra}

`load_checkpoint` rebuilds the model with ``create_model(model_name, **model_config)`` and loads the
weights strictly, so prediction can never run a different architecture or preprocessing than training.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covidct.errors import CheckpointError
from covidct.jsonable import to_jsonable

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_name", "model_config", "state_dict", "recipe", "class_names")
MAX_KEYS_SHOWN = 5


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and what travelled with it."""

    model: nn.Module
    model_name: str
    recipe: dict[str, Any]
    class_names: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


def _git_commit() -> str | None:
    """Commit of the source tree covidct runs from, or None (not a git checkout, no git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_provenance(data: str | None = None) -> dict[str, Any]:
    """covidct version, git commit (if any), UTC date, and a training-data description."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        code_version = version("covidct")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        code_version = "unknown"
    return {
        "covidct_version": code_version,
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "training_data": data,
    }


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    recipe: dict[str, Any] | Any,
    provenance: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a registered `CovidCTModel`) with its recipe and provenance to ``path``.

    Args:
        recipe: the preprocessing recipe as a dict (``Recipe.to_dict()``); a Recipe object is accepted.
        provenance: merged over `default_provenance()` (e.g. ``{"training_data": "COVIDx CT-2A"}``).
        extra: free-form JSON-like values (e.g. ``{"threshold": 0.42}``).
    """
    name = getattr(model, "name", "")
    if not name:
        raise CheckpointError(
            f"{type(model).__name__} has no registry name; build models with covidct.models.create_model."
        )
    if hasattr(recipe, "to_dict"):
        recipe = recipe.to_dict()
    prov = default_provenance()
    prov.update(provenance or {})
    payload = {
        "format_version": FORMAT_VERSION,
        "model_name": name,
        "model_config": to_jsonable(dict(model.config)),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "recipe": to_jsonable(dict(recipe)),
        "class_names": list(model.class_names),
        "provenance": to_jsonable(prov),
        "extra": to_jsonable(dict(extra or {})),
    }
    return _save_atomically(payload, Path(path))


def update_extra(src: str | Path, dst: str | Path, values: dict[str, Any]) -> Path:
    """Copy checkpoint ``src`` to ``dst`` with ``values`` merged into its ``extra`` (weights untouched).

    Used to attach post-hoc settings fitted on validation data (e.g. fusion weights) to a trained model.
    """
    payload = _read_payload(Path(src), "cpu")
    payload["extra"] = {**dict(payload.get("extra") or {}), **to_jsonable(dict(values))}
    return _save_atomically(payload, Path(dst))


def _save_atomically(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it: never half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text.splitlines()[0][:limit] if text else ""


def _read_payload(path: Path, map_location: Any) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Give the path of a .pt file from `covidct train`."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable covidct checkpoint: it is truncated, corrupt or not "
            f"a torch.save file ({type(exc).__name__}: {_first_line(exc)}). "
            "Re-copy the file or re-export it with covidct.models.save_checkpoint."
        ) from exc
    if not isinstance(payload, dict) or not all(k in payload for k in REQUIRED_KEYS):
        found = sorted(payload)[:MAX_KEYS_SHOWN] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is a torch file but not a covidct checkpoint (found {found}; need keys "
            f"{', '.join(REQUIRED_KEYS)}). A bare state_dict can be loaded with model.load_state_dict."
        )
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format_version']}, newer than this covidct supports "
            f"({FORMAT_VERSION}). Upgrade covidct."
        )
    return payload


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:MAX_KEYS_SHOWN]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:MAX_KEYS_SHOWN]})")
        if wrong:
            shown = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3]]
            parts.append(f"{len(wrong)} shape mismatches ({'; '.join(shown)})")
        raise CheckpointError(
            f"Weights in {path} do not fit model {getattr(model, 'name', '')!r}: {', '.join(parts)}. "
            "The checkpoint was written by a different covidct version or edited by hand."
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", expected_model: str | None = None
) -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint`; the model comes back in eval mode.

    Raises:
        CheckpointError: the file is missing, truncated, not a covidct checkpoint, holds another
            model than ``expected_model``, or its weights do not fit the rebuilt model.
    """
    from covidct.errors import CovidCTError
    from covidct.models.registry import create_model, get_model_class

    path = Path(path)
    payload = _read_payload(path, map_location)
    name = payload["model_name"]
    if expected_model is not None and name != expected_model:
        raise CheckpointError(
            f"{path} holds a {name!r} model but {expected_model!r} was expected. "
            f"Pass a {expected_model} checkpoint or choose model {name!r}."
        )
    try:
        cls = get_model_class(name)
        config = {
            k: v
            for k, v in dict(payload["model_config"]).items()
            if k not in getattr(cls, "non_persistent_config", ())
        }
        model = create_model(name, **config)
    except CovidCTError as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r}: {exc}") from exc
    _load_state(model, payload["state_dict"], path)
    model.to(map_location if isinstance(map_location, str | torch.device) else "cpu")
    model.eval()
    class_names = tuple(payload["class_names"])
    if tuple(model.class_names) != class_names:
        model.class_names = class_names
    return Checkpoint(
        model=model,
        model_name=name,
        recipe=dict(payload["recipe"]),
        class_names=class_names,
        provenance=dict(payload.get("provenance") or {}),
        extra=dict(payload.get("extra") or {}),
        path=str(path),
    )
