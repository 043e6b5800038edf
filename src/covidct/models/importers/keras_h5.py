"""Keras HDF5 weight files (``model.save_weights("x.h5")`` of Keras 2.x), read with h5py; no TensorFlow.

Layout (Keras 2 "legacy h5"): the root (or ``model_weights/`` of a whole-model file) has an attribute
``layer_names``; each layer group has ``weight_names`` (e.g. ``conv3d/kernel:0``) naming datasets inside
the group. Keras stores convolution kernels as (*kernel, in, out) and dense kernels as (in, out), and
flattens channels-last feature maps in (*spatial, channels) order; the converters here give PyTorch's
(out, in, *kernel), (out, in) and channels-first flatten order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covidct.errors import CorruptFileError, WeightsError
from covidct.extras import require_extra

FORMAT = "keras-h5"


@dataclass
class KerasWeights:
    """The weights of a Keras HDF5 file.

    Attributes:
        layers: layer name -> {weight name without layer prefix and ``:0`` (``kernel``, ``bias``): array},
            in the file's layer order; layers without weights (pooling, flatten, dropout) map to {}.
        keras_version, backend: as recorded in the file ('' when absent).
    """

    layers: dict[str, dict[str, np.ndarray]]
    keras_version: str
    backend: str

    def weighted_layers(self) -> list[str]:
        """Names of the layers that hold weights, in file order."""
        return [name for name, weights in self.layers.items() if weights]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras_h5(path: str | Path) -> KerasWeights:
    """Read every layer's weights from a Keras 2 HDF5 weights (or whole-model) file.

    Raises:
        MissingExtraError: h5py is not installed. CorruptFileError: not an HDF5 file.
        WeightsError: no ``layer_names`` (not a Keras 2 weights file).
    """
    require_extra("import", "h5py", feature="Reading Keras .h5 weights")
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CorruptFileError(
            f"{path} is not a readable HDF5 file ({exc}); give the released .h5 file."
        ) from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise WeightsError(
                f"{path} has no 'layer_names' attribute: not a Keras 2 HDF5 weights file "
                "(Keras 3 '.weights.h5' files are not supported yet)."
            )
        layers = {}
        for layer in (_text(n) for n in root.attrs["layer_names"]):
            group = root[layer]
            weights = {}
            for weight_name in (_text(n) for n in group.attrs.get("weight_names", [])):
                short = weight_name.split("/")[-1].split(":")[0]
                weights[short] = np.asarray(group[weight_name], dtype=np.float32)
            layers[layer] = weights
        version = _text(handle.attrs.get("keras_version", root.attrs.get("keras_version", "")))
        backend = _text(handle.attrs.get("backend", root.attrs.get("backend", "")))
    return KerasWeights(layers, version, backend)


def conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Keras (*kernel, in, out) -> PyTorch (out, in, *kernel), for 1D/2D/3D convolutions."""
    n = kernel.ndim
    return np.ascontiguousarray(np.transpose(kernel, (n - 1, n - 2, *range(n - 2))))


def dense_kernel_to_torch(kernel: np.ndarray, flatten_from: tuple[int, ...] | None = None) -> np.ndarray:
    """Keras dense (in, out) -> PyTorch (out, in).

    Args:
        flatten_from: for the dense layer right after ``Flatten`` of a channels-last map, that map's
            shape (*spatial, channels): rows are reordered from Keras's (*spatial, C) flatten order to
            PyTorch's (C, *spatial) one.
    """
    n_in, n_out = kernel.shape
    if flatten_from is None:
        return np.ascontiguousarray(kernel.T)
    if int(np.prod(flatten_from)) != n_in:
        raise WeightsError(
            f"Dense kernel has {n_in} inputs but the flattened map {flatten_from} has "
            f"{int(np.prod(flatten_from))}."
        )
    spatial = len(flatten_from) - 1
    channels_first = np.transpose(
        kernel.reshape(*flatten_from, n_out), (spatial + 1, spatial, *range(spatial))
    )
    return np.ascontiguousarray(channels_first.reshape(n_out, n_in))
