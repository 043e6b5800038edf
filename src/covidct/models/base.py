"""`CovidCTModel`: the attributes and input checks every registered model shares."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from covidct.classes import CLASSES_3, CLASSES_BINARY
from covidct.errors import ConfigError, ShapeError


class CovidCTModel(nn.Module):
    """Base class of every registered model.

    Attributes (set by the subclass / `create_model`):
        name: registry name.
        config: constructor keyword arguments (JSON-able), enough to rebuild the architecture.
        class_names: output class order (logit ``i`` is ``class_names[i]``).
        input_shape: paper-default input without the batch dimension.
        recipe_name: preprocessing recipe that feeds this model (see `covidct.preprocessing`).
        cam_layer: dotted name of the module to explain (``model.get_submodule(cam_layer)``).
        unit: ``"slice"`` (one 2D image -> one prediction) or ``"scan"``.
        data_units: how training builds samples for it (``TrainConfig.data.unit``); the first is
            the default.
        fixed_input: the model only takes its built ``input_shape`` (a dense layer after the
            convolutions), so the recipe must produce exactly that shape.
    """

    name: str = ""
    recipe_name: str = ""
    cam_layer: str = ""
    unit: str = "slice"
    data_units: tuple[str, ...] = ("slice",)
    other_recipes: tuple[str, ...] = ()
    """Recipes besides ``recipe_name`` that produce this model's input (e.g. another group's
    preprocessing for the same network)."""
    fixed_input: bool = False
    non_persistent_config: tuple[str, ...] = ()
    """Config keys that must not be replayed when a checkpoint rebuilds the model (e.g. ``weights``)."""

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}
        self.class_names: tuple[str, ...] = ()
        self.input_shape: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor, layout: str, channels: int) -> None:
        """Raise `ShapeError` unless ``x`` has ``len(layout)`` dims and ``channels`` in the ``C`` slot.

        ``layout`` names the axes, e.g. ``"NCHW"`` or ``"NSCHW"``.
        """
        shown = "(" + ", ".join(str(channels) if axis == "C" else axis for axis in layout) + ")"
        label = self.name or type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{label} expects a torch.Tensor of shape {shown} but got {type(x).__name__}.")
        if x.ndim != len(layout):
            raise ShapeError(
                f"{label} expects input {shown} but got a {x.ndim}D tensor of shape {tuple(x.shape)}. "
                "Prepare inputs with the model's preprocessing recipe "
                f"({self.recipe_name!r}) and add the batch dimension."
            )
        c = x.shape[layout.index("C")]
        if c != channels:
            raise ShapeError(
                f"{label} expects input {shown} with {channels} channel(s) but got {c} channels "
                f"(shape {tuple(x.shape)}). Use the {self.recipe_name!r} recipe, which produces "
                f"{channels}-channel inputs."
            )


def resolve_class_names(
    num_classes: int | None, class_names: Sequence[str] | None, default: tuple[str, ...]
) -> tuple[str, ...]:
    """Class names from explicit ``class_names`` or a ``num_classes`` override of ``default``."""
    if class_names is not None:
        names = tuple(str(c) for c in class_names)
        if num_classes is not None and num_classes != len(names):
            raise ConfigError(f"num_classes={num_classes} but class_names has {len(names)} names: {names}.")
        return names
    if num_classes is None or num_classes == len(default):
        return tuple(default)
    if num_classes == len(CLASSES_3):
        return CLASSES_3
    if num_classes == len(CLASSES_BINARY):
        return CLASSES_BINARY
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}.")
    return tuple(f"class_{i}" for i in range(num_classes))
