"""The one JSON sanitiser: any nested result, config or summary -> plain JSON types."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def to_jsonable(value: Any, *, max_array: int | None = None) -> Any:
    """Plain JSON types, recursively.

    dict keys -> str; tuples and lists -> lists; numpy scalars -> Python numbers; arrays -> lists (or
    ``"<array (shape)>"`` when larger than ``max_array`` elements); paths -> str; NaN and infinities ->
    None (JSON has no NaN); bool, int, str and None unchanged; anything else -> ``str(value)``.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, max_array=max_array) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, max_array=max_array) for v in value]
    if isinstance(value, np.ndarray):
        if max_array is not None and value.size > max_array:
            return f"<array {value.shape}>"
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
