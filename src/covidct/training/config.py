"""Training configuration: frozen dataclasses loaded from YAML.

One `TrainConfig` describes a whole run: model, preprocessing recipe, data, optimiser, schedule
and run settings. Every paper's training recipe is one YAML file in ``covidct/configs/``; the engine is
the same for all of them.

Overrides use dotted keys (``optimizer.lr=0.01``) or nested dicts; unknown keys raise
`ConfigError` naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from covidct.errors import ConfigError, closest_names
from covidct.jsonable import to_jsonable
from covidct.models.registry import check_model_inputs, model_defaults
from covidct.preprocessing import Recipe, get_recipe

TASKS = ("3-class", "binary")
UNITS = ("slice", "scan", "slice-set", "denoise", "residual")
"""How samples are built: one 2D slice, one prepared volume, a set of slices (ai-corona), a
(noisy, clean) control slice pair (CovidCTNet stage 1), or a residual volume (CovidCTNet stage 2)."""
SLICE_SELECTIONS = ("all", "lesion", "labelled")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step")
BALANCE_MODES = ("none", "repeat", "source-class")
AMP_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")
MINIMISED_METRICS = ("val_loss", "val_mse")


@dataclass(frozen=True)
class ModelSpec:
    """Registry name of the model and constructor overrides (``create_model(name, **overrides)``)."""

    name: str = "covidnet-ct2-s"
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeSpec:
    """Preprocessing recipe name and overrides (``get_recipe(name, **overrides)``); ``name`` left
    out (None) means the model's own recipe (`covidct.models.model_defaults`)."""

    name: str | None = None
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is split.

    Attributes:
        path: manifest CSV, COVIDx split file or class-folder root (``read_cohort``).
        task: ``3-class`` (Normal / Pneumonia / COVID-19) or ``binary`` (Non-COVID / COVID-19).
        unit: how samples are built (see `UNITS`); left out (None): the model's default.
        split_seed: seed of the patient-level split (when the data carries no split).
        fractions: train / val / test fractions of patients.
        slices: for volume records in slice mode: every slice, or only lesion-labelled slices.
        noise_amplitude: stage-1 denoiser: peak amplitude of the Perlin noise (units of [0, 1]).
        noise_fraction: stage-1 denoiser: fraction of control slices that get noise.
        noise_scale: stage-1 denoiser: Perlin feature size in pixels.
        cache_dir: folder for prepared volumes (None: memory only).
        slice_cache: decoded slice caches (``covidct cache``), comma-separated folders. Slice
            images are read from them by file name (others from disk); without ``path`` the
            records are the caches' own.
    """

    path: str | None = None
    task: str = "3-class"
    unit: str | None = None
    split_seed: int = 0
    fractions: tuple = (0.7, 0.15, 0.15)
    slices: str = "all"
    noise_amplitude: float = 0.15
    noise_fraction: float = 0.5
    noise_scale: float = 32.0
    cache_dir: str | None = None
    slice_cache: str | None = None

    @property
    def slice_cache_folders(self) -> list[str]:
        """``slice_cache`` split at commas (empty list when unset)."""
        return [p.strip() for p in str(self.slice_cache or "").split(",") if p.strip()]


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "none"
    step_size: int = 10
    gamma: float = 0.1


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when ``metric`` has not improved for ``patience`` epochs (0: never stop early)."""

    patience: int = 0
    metric: str = "val_accuracy"


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Load with `TrainConfig.from_yaml`."""

    name: str = "run"
    model: ModelSpec = field(default_factory=ModelSpec)
    recipe: RecipeSpec = field(default_factory=RecipeSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    epochs: int = 10
    max_epochs: int | None = None
    """Stop after this many epochs (for interrupting and resuming); the schedule still uses ``epochs``."""
    batch_size: int = 16
    """Global batch size (split across DDP processes)."""
    grad_accum: int = 1
    balance: str = "none"
    """``repeat``: classes repeated to equal counts (COVIDNet-CT); ``source-class``: each (source, class)
    cell drawn equally often, epoch size unchanged (seeded draw with replacement)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (0: none)."""
    counterfactual: float = 0.0
    """Binary slice task only: probability that a training slice is replaced by its other-class
    counterfactual (`covidct.training.counterfactual`: lesions removed from a COVID-19 slice,
    ground glass added to a Non-COVID one), so that a source's look stops predicting the label."""
    source_adversary: float = 0.0
    """Largest strength of the class-conditional source adversary (`covidct.training.source_adversary`:
    a head names each training slice's source within its class, its gradient reversed into the
    backbone); 0: off."""
    augment: bool = True
    device: str = "auto"
    amp: str = "auto"
    """bf16 autocast: ``auto`` = on for CUDA only."""
    channels_last: str = "auto"
    """``auto`` = on for CUDA only; ``on``/``off`` force it."""
    num_workers: int = 0
    seed: int = 0
    out_dir: str = "runs/run"
    denoiser_checkpoint: str | None = None
    """CovidCTNet stage 2: path of the stage-1 denoiser checkpoint (best.ckpt)."""
    progress: bool = True
    eval_batch_size: int | None = None

    def __post_init__(self) -> None:
        """Fill what the model declares (its recipe, its data unit) where the config leaves it out."""
        if self.recipe.name is not None and self.data.unit is not None:
            return
        defaults = model_defaults(self.model.name, **self.model.overrides)
        if self.recipe.name is None:
            object.__setattr__(self, "recipe", dataclasses.replace(self.recipe, name=defaults.recipe))
        if self.data.unit is None:
            object.__setattr__(self, "data", dataclasses.replace(self.data, unit=defaults.data_unit))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a nested dict plus overrides (dotted keys or nested dicts)."""
        merged = _deep_merge(dict(raw), _expand_dotted(overrides))
        config = _build(cls, merged, "")
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load ``path`` (a YAML file, or a shipped config name such as ``covidnet-ct2-s``) and apply
        ``overrides`` (e.g. ``epochs=2``, ``**{"optimizer.lr": 0.1}``)."""
        from covidct.configs import config_path

        path = config_path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of keys, got {type(raw).__name__}.")
        return cls.from_dict(raw, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-ready, tuples as lists)."""
        return to_jsonable(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with dotted-key overrides applied."""
        return TrainConfig.from_dict(self.to_dict(), **overrides)

    # ---------------------------------------------------------------- checking
    def validate(self) -> None:
        """Raise `ConfigError` for values outside their allowed sets or ranges."""
        _choice("data.task", self.data.task, TASKS)
        _choice("data.unit", self.data.unit, UNITS)
        _choice("data.slices", self.data.slices, SLICE_SELECTIONS)
        _choice("optimizer.name", self.optimizer.name, OPTIMIZERS)
        _choice("scheduler.name", self.scheduler.name, SCHEDULERS)
        _choice("balance", self.balance, BALANCE_MODES)
        _choice("amp", self.amp, AMP_MODES)
        _choice("channels_last", self.channels_last, AMP_MODES)
        _choice("device", self.device, DEVICES)
        for key, value in (
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
        ):
            if int(value) < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}.")
        if (
            len(self.data.fractions) != 3
            or abs(sum(self.data.fractions) - 1.0) > 1e-6
            or min(self.data.fractions) < 0
        ):
            raise ConfigError(
                f"data.fractions must be three non-negative numbers (train, val, test) summing to 1, "
                f"got {list(self.data.fractions)}."
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}.")
        if not 0.0 <= self.counterfactual <= 1.0:
            raise ConfigError(f"counterfactual must lie in [0, 1], got {self.counterfactual}.")
        if self.source_adversary < 0:
            raise ConfigError(f"source_adversary must be >= 0, got {self.source_adversary}.")
        if self.counterfactual and (self.data.task != "binary" or self.data.unit != "slice"):
            raise ConfigError(
                "counterfactual slices need data.task: binary and data.unit: slice (they swap COVID-19 and "
                f"Non-COVID), got task {self.data.task!r}, unit {self.data.unit!r}."
            )
        if self.optimizer.lr <= 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.optimizer.lr}.")
        check_model_inputs(self.model.name, self.model.overrides, self.build_recipe(), str(self.data.unit))
        if self.data.unit == "residual" and not self.denoiser_checkpoint:
            raise ConfigError(
                "data.unit 'residual' (CovidCTNet stage 2) needs denoiser_checkpoint: the best.ckpt of the "
                "stage-1 run (config covidctnet-denoiser). Set it with --set denoiser_checkpoint=PATH."
            )

    def build_recipe(self) -> Recipe:
        """The preprocessing `Recipe` of this run."""
        return get_recipe(str(self.recipe.name), **self.recipe.overrides)

    @property
    def metric_mode(self) -> str:
        """``min`` for loss-like metrics, ``max`` otherwise."""
        return "min" if self.early_stopping.metric in MINIMISED_METRICS else "max"


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        close = closest_names(str(value), valid)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key} is {value!r}.{hint} Valid values: {', '.join(valid)}.")


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optimizer.lr": 1}`` -> ``{"optimizer": {"lr": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {key!r} conflicts with another override of {part!r}.")
        node[parts[-1]] = _deep_merge(node.get(parts[-1], {}), value) if isinstance(value, dict) else value
    return out


def _deep_merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _deep_merge(base.get(key), value) if key in base else value
        return merged
    return update


FREE_DICT_FIELDS = ("overrides",)
"""Fields whose keys are passed on verbatim (model / recipe constructor overrides)."""


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Recursively build dataclass ``cls`` from ``raw``; unknown keys raise `ConfigError`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {raw!r}.")
    hints = get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in valid:
            where = f"{prefix}.{key}" if prefix else key
            close = closest_names(str(key), valid)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown config key {where!r}.{hint} Valid keys here: {', '.join(valid)}.")
        hint_type = hints[key]
        sub_prefix = f"{prefix}.{key}" if prefix else key
        if dataclasses.is_dataclass(hint_type):
            if isinstance(value, str) and hasattr(hint_type, "name"):
                value = {"name": value}  # `model: covidnet-ct2-s` shorthand
            kwargs[key] = _build(hint_type, value or {}, sub_prefix)
        elif key in FREE_DICT_FIELDS:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{sub_prefix} must be a mapping of constructor overrides, got {value!r}.")
            kwargs[key] = dict(value or {})
        else:
            kwargs[key] = _coerce(sub_prefix, value, hint_type)
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Cast YAML / command-line strings to the annotated scalar type."""
    text = str(hint)
    if value is None:
        return None
    if (hint is str or text == "str") and isinstance(value, bool):
        return "on" if value else "off"  # YAML reads on/off as booleans
    try:
        if hint is bool or text == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "yes", "on", "1"):
                    return True
                if low in ("false", "no", "off", "0"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int or text.startswith("int"):
            return int(value)
        if hint is float or text.startswith("float"):
            return float(value)
        if hint is tuple or text.startswith("tuple"):
            if isinstance(value, str):
                value = yaml.safe_load(value)
            return tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        type_name = getattr(hint, "__name__", text)
        raise ConfigError(f"Config key {key!r} expects {type_name}, got {value!r}.") from exc
    return str(value) if isinstance(value, Path) else value


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``["optimizer.lr=0.01", "augment=false"]`` -> dotted overrides (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. optimizer.lr=0.001), got {item!r}.")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc}).") from exc
    return out
