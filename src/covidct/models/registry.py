"""Model registry (timm style): ``@register_model("name")`` on a class, ``create_model(name, **overrides)``.

The registered object is an ``nn.Module`` subclass of `CovidCTModel`. `create_model` binds the
overrides against the class constructor, fills in its defaults and stores the resolved keyword
arguments as ``model.config`` (JSON-able), so ``create_model(model.name, **model.config)`` rebuilds
the same architecture; checkpoints rely on that.

Each model class declares what it takes (`model_defaults`): its recipe, its training data unit and
its input shape; `check_model_inputs` refuses a recipe or unit the model cannot use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from covidct.errors import ConfigError, UnknownNameError, unknown_name_message
from covidct.jsonable import to_jsonable

_REGISTRY: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: register a `CovidCTModel` subclass under ``name``."""

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"Model name {name!r} is registered twice ({_REGISTRY[name]} and {cls}).")
        _REGISTRY[name] = cls
        return cls

    return decorator


def _ensure_loaded() -> None:
    """Import the modules that define models (they register themselves on import)."""
    import covidct.models.ai_corona  # noqa: F401
    import covidct.models.covidctnet  # noqa: F401
    import covidct.models.covidnet_3d  # noqa: F401
    import covidct.models.covidnet_ct2  # noqa: F401


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type:
    """The class registered under ``name``; `UnknownNameError` (with the closest name) otherwise."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UnknownNameError(unknown_name_message("model", name, list(_REGISTRY)))
    return _REGISTRY[name]


def resolve_config(cls: type, overrides: dict[str, Any], name: str) -> dict[str, Any]:
    """Bind ``overrides`` to ``cls.__init__``, apply defaults, return the full JSON-able kwargs dict."""
    sig = inspect.signature(cls.__init__)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    valid = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ConfigError(f"Model {name!r} has no option {unknown[0]!r}. Valid options: {', '.join(valid)}.")
    # A registered variant may change its parent's defaults with a class attribute ``default_config``
    # (e.g. COVID-Net CT-2 L and S differ only in stage widths).
    overrides = {**getattr(cls, "default_config", {}), **overrides}
    bound = sig.bind_partial(None, **overrides)
    bound.apply_defaults()
    config = dict(bound.arguments)
    config.pop("self", None)
    return to_jsonable(config)


def create_model(name: str, **overrides: Any) -> Any:
    """Build a registered model; ``overrides`` replace constructor defaults (``num_classes``, ...).

    Example:
        >>> model = create_model("covidnet-ct2-s", num_classes=2)
        >>> model.config["num_classes"]
        2
    """
    cls = get_model_class(name)
    config = resolve_config(cls, overrides, name)
    model = cls(**config)
    model.name = name
    model.config = config
    return model


@dataclass(frozen=True)
class ModelDefaults:
    """What a registered model declares about its inputs (timm's pretrained-cfg idea).

    Attributes:
        recipe: the preprocessing recipe that feeds it (the default).
        recipes: every recipe that can feed it (``recipe`` first).
        unit: ``"slice"`` or ``"scan"`` (what one prediction covers).
        data_units: how training builds its samples (``TrainConfig.data.unit``); first = default.
        input_shape: one input without the batch axis, for the given overrides.
        fixed_input: whether only ``input_shape`` is accepted (else other in-plane sizes work).
    """

    recipe: str
    recipes: tuple[str, ...]
    unit: str
    data_units: tuple[str, ...]
    input_shape: tuple[int, ...]
    fixed_input: bool

    @property
    def data_unit(self) -> str:
        return self.data_units[0]


def model_defaults(name: str, **overrides: Any) -> ModelDefaults:
    """The `ModelDefaults` of model ``name`` built with ``overrides`` (on the meta device: no memory)."""
    import torch

    cls = get_model_class(name)
    with torch.device("meta"):
        model = cls(**resolve_config(cls, overrides, name))
    return ModelDefaults(recipe=cls.recipe_name, recipes=(cls.recipe_name, *cls.other_recipes),
                         unit=cls.unit, data_units=tuple(cls.data_units),
                         input_shape=tuple(int(v) for v in model.input_shape), fixed_input=cls.fixed_input)


def check_model_inputs(name: str, overrides: dict[str, Any], recipe: Any, data_unit: str) -> None:
    """`ConfigError` unless ``recipe`` (a `Recipe`) and ``data_unit`` are ones model ``name`` takes."""
    defaults = model_defaults(name, **overrides)
    if recipe.name not in defaults.recipes:
        raise ConfigError(
            f"Model {name!r} is fed by the {' or '.join(map(repr, defaults.recipes))} recipe, not "
            f"{recipe.name!r}. Leave recipe.name out (it follows the model) or set it to "
            f"{defaults.recipe!r}; recipe options go in recipe.overrides.")
    if data_unit not in defaults.data_units:
        raise ConfigError(
            f"Model {name!r} trains on data.unit {' or '.join(map(repr, defaults.data_units))}, not "
            f"{data_unit!r}. Leave data.unit out (it follows the model) or pick one of those.")
    produced = tuple(int(v) for v in recipe.input_shape)
    if defaults.fixed_input and produced != defaults.input_shape:
        raise ConfigError(
            f"Model {name!r} was built for input {defaults.input_shape} but the {recipe.name!r} recipe "
            f"produces {produced}. Set model.overrides.input_shape to {list(produced)} or change the "
            "recipe's depth/size overrides to match.")
