"""Importer for CovidCTNet's released 3D CNN classifier (``weight_cnn_CovidCtNet_v2_final.h5``, Keras 2.4).

The Keras model (``Training-CovidCTNet.ipynb``): input (50, 128, 128, 1) channels-last; Conv3D 8 'valid',
8 'same', pool 2; pairs of 16, 32, 64, 128 'same' each followed by pool 2; Flatten of (1, 3, 3, 128) in
(D, H, W, C) order; Dense 32 ReLU; Dropout 0.3; Dense 3 softmax over ``['Control', 'COVID-19', 'CAP']``.
covidct's ``covidctnet-classifier`` with ``input_shape=(1, 50, 128, 128)`` has the same layers; this
module copies the weights in, converts their layout and reorders the output rows to covidct's classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from covidct.errors import WeightsError
from covidct.models.importers import ImportedModel, register_importer
from covidct.models.importers.keras_h5 import (
    FORMAT,
    conv_kernel_to_torch,
    dense_kernel_to_torch,
    read_keras_h5,
)

AUTHOR_CLASSES = ("Control", "COVID-19", "CAP")
"""Output order of the released model (``Label = ['Control','COVID-19','CAP']`` in the test notebook)."""
AUTHOR_TO_COVIDCT = {"Control": "Normal", "COVID-19": "COVID-19", "CAP": "Pneumonia"}
RELEASED_INPUT_SHAPE = (1, 50, 128, 128)
RELEASED_RECIPE = "covidctnet-released"
TRAINING_DATA = (
    "the CovidCTNet authors' training data (Javaheri et al., npj Digital Medicine 2021); "
    "weights released by the authors, not trained by covidct"
)


def output_order(class_names: tuple[str, ...]) -> list[int]:
    """Index into the authors' outputs for each covidct class (Normal, Pneumonia, COVID-19 -> 0, 2, 1)."""
    by_covidct = {covidct: i for i, covidct in enumerate(AUTHOR_TO_COVIDCT[a] for a in AUTHOR_CLASSES)}
    return [by_covidct[name] for name in class_names]


def _copy(param: torch.Tensor, value: np.ndarray, where: str) -> None:
    if tuple(value.shape) != tuple(param.shape):
        raise WeightsError(
            f"{where}: the file holds shape {tuple(value.shape)} (after conversion) but covidct expects "
            f"{tuple(param.shape)}; is this the released CovidCTNet classifier at 50x128x128?"
        )
    with torch.no_grad():
        param.copy_(torch.from_numpy(value))


@register_importer(
    "covidctnet-classifier",
    file_format=FORMAT,
    description="CovidCTNet 3D CNN classifier, Keras 2 HDF5 weights (weight_cnn_CovidCtNet_v2_final.h5)",
)
def load_covidctnet_classifier(path: Path) -> ImportedModel:
    """Build ``covidctnet-classifier`` at 1x50x128x128 and load the released Keras weights into it."""
    from covidct.models import create_model
    from covidct.preprocessing import get_recipe

    weights = read_keras_h5(path)
    model = create_model("covidctnet-classifier", input_shape=RELEASED_INPUT_SHAPE)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    dense = [model.fc1, model.fc2]
    names = weights.weighted_layers()
    if len(names) != len(convs) + len(dense):
        raise WeightsError(
            f"{path} has {len(names)} layers with weights ({', '.join(names)}); the released CovidCTNet "
            f"classifier has {len(convs)} Conv3D + {len(dense)} Dense layers."
        )
    for conv, name in zip(convs, names, strict=False):
        layer = weights.layers[name]
        _copy(conv.weight, conv_kernel_to_torch(layer["kernel"]), f"{path.name} layer {name} kernel")
        _copy(conv.bias, layer["bias"], f"{path.name} layer {name} bias")
    hidden, out = (weights.layers[n] for n in names[len(convs) :])
    flat_map = (*model.feature_shape, convs[-1].out_channels)  # Keras flattens (D, H, W, C)
    _copy(model.fc1.weight, dense_kernel_to_torch(hidden["kernel"], flat_map), f"{path.name} dense kernel")
    _copy(model.fc1.bias, hidden["bias"], f"{path.name} dense bias")
    order = output_order(tuple(model.class_names))
    _copy(model.fc2.weight, dense_kernel_to_torch(out["kernel"])[order], f"{path.name} output kernel")
    _copy(model.fc2.bias, out["bias"][order], f"{path.name} output bias")
    model.eval()
    return ImportedModel(
        model=model,
        recipe=get_recipe(RELEASED_RECIPE),
        provenance={
            "training_data": TRAINING_DATA,
            "keras_version": weights.keras_version,
            "keras_backend": weights.backend,
            "source_classes": list(AUTHOR_CLASSES),
            "class_map": dict(AUTHOR_TO_COVIDCT),
            "input": "the authors feed it CT - BCDU-Net(CT) (their BCDU-Net weights are not public); "
            "this checkpoint alone classifies the preprocessed scan without a denoiser",
        },
    )
