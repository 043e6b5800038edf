"""From a `TrainConfig` to a `DataBundle`: read the cohort, split by patient, build the datasets.

This is the only place where the training config meets the io and preprocessing layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from covidct.classes import CLASSES_3, CLASSES_BINARY, NON_COVID, NORMAL, canonical_class
from covidct.errors import ConfigError, NoDataError
from covidct.training.config import TrainConfig
from covidct.training.datasets import (
    CachedSliceLoader,
    DenoiserDataset,
    ScanDataset,
    SliceDataset,
    SliceSetDataset,
    VolumeLoader,
    collate_slice_sets,
    slice_refs,
)
from covidct.training.splits import count_by, patient_of, records_in, split_by_patient

CONTROL_CLASSES = (NORMAL, NON_COVID)



@dataclass
class DataBundle:
    """What the engine trains on: datasets (items are dicts, see `covidct.training.datasets`)."""

    train: Dataset
    val: Dataset | None
    classes: tuple[str, ...]
    recipe: Any
    test: Dataset | None = None
    collate: Callable | None = None
    description: dict[str, Any] = field(default_factory=dict)


def task_classes(task: str) -> tuple[str, ...]:
    """Class names of a task: ``3-class`` -> CLASSES_3, ``binary`` -> CLASSES_BINARY."""
    return CLASSES_3 if task == "3-class" else CLASSES_BINARY


def build_recipe(config: TrainConfig) -> Any:
    """The run's preprocessing recipe (`TrainConfig.build_recipe`)."""
    return config.build_recipe()


def open_slice_caches(config: TrainConfig) -> list[Any]:
    """The `SliceCache`s named by ``data.slice_cache`` (empty list when unset)."""
    folders = config.data.slice_cache_folders
    if folders and config.data.unit != "slice":
        raise ConfigError(
            "data.slice_cache holds decoded 2D slices; it works with data.unit 'slice', "
            f"not {config.data.unit!r}."
        )
    from covidct.io.slice_cache import SliceCache

    return [SliceCache(folder) for folder in folders]


def load_records(config: TrainConfig) -> list[Any]:
    """Read the cohort at ``data.path`` (or, without it, the records of ``data.slice_cache``) and
    assign splits by patient (respecting given splits)."""
    if config.data.path:
        from covidct.io.cohort import read_cohort

        records = read_cohort(config.data.path)
    elif config.data.slice_cache_folders:
        records = [r for cache in open_slice_caches(config) for r in cache.records()]
    else:
        raise ConfigError(
            "data.path is not set. Pass --data PATH (a manifest CSV, COVIDx split file or class folders) "
            "or --set data.slice_cache=CACHE[,CACHE...] (folders made by `covidct cache`)."
        )
    if not records:
        raise NoDataError(f"The cohort at {config.data.path or config.data.slice_cache} holds no cases.")
    return split_by_patient(records, config.data.fractions, seed=config.data.split_seed)


def describe(records: Sequence[Any], config: TrainConfig) -> dict[str, Any]:
    """The data and task, and `split_counts` of ``records`` (data.json, provenance)."""
    return {"data": config.data.path, "task": config.data.task, **split_counts(records)}


def split_counts(records: Sequence[Any]) -> dict[str, dict[str, int]]:
    """Counts per split/label and split/source/label, plus patient counts per split/label."""
    seen: set[tuple[str, str, str]] = set()
    for r in records:
        seen.add((str(r.split), str(r.label), patient_of(r)))
    patients: dict[str, int] = {}
    for split, label, _ in sorted(seen):
        patients[f"{split}/{label}"] = patients.get(f"{split}/{label}", 0) + 1
    return {
        "records_per_split_label": count_by(records, "split", "label"),
        "records_per_split_source_label": count_by(records, "split", "source", "label"),
        "patients_per_split_label": patients,
    }


def build_data(
    config: TrainConfig,
    records: Sequence[Any] | None = None,
    *,
    volume_loader: Callable[[Any], Any] | None = None,
) -> DataBundle:
    """Datasets for ``config.data.unit`` from the cohort (or from ``records`` already split)."""
    if records is None:
        records = load_records(config)
    else:  # respects splits already given, splits the rest, refuses leakage
        records = split_by_patient(list(records), config.data.fractions, seed=config.data.split_seed)
    recipe = build_recipe(config)
    classes = task_classes(config.data.task)
    builder = _BUILDERS[config.data.unit]
    bundle = builder(config, records, recipe, classes, volume_loader)
    bundle.description = describe(records, config)
    return bundle


def _slices(
    config: TrainConfig,
    records: list[Any],
    recipe: Any,
    classes: tuple[str, ...],
    volume_loader: Callable | None,
) -> DataBundle:
    volumes = VolumeLoader()
    caches = open_slice_caches(config)
    loader: Any = CachedSliceLoader(caches, volumes) if caches else volumes
    if config.data.slices == "labelled":
        records = [r for r in records if getattr(r, "slice_index", None) is not None]

    def make(split: str, augment: bool) -> SliceDataset:
        return SliceDataset(
            slice_refs(records_in(records, split), volumes),
            recipe,
            classes,
            loader=loader,
            augment=augment,
            seed=config.seed,
            counterfactual=config.counterfactual if split == "train" else 0.0,
        )

    return DataBundle(
        train=make("train", config.augment),
        val=make("val", False),
        test=make("test", False),
        classes=classes,
        recipe=recipe,
    )


def _scans(
    config: TrainConfig,
    records: list[Any],
    recipe: Any,
    classes: tuple[str, ...],
    volume_loader: Callable | None,
    *,
    transform: Callable | None = None,
    transform_key: str = "",
) -> DataBundle:
    cls = SliceSetDataset if config.data.unit == "slice-set" else ScanDataset

    def make(split: str) -> ScanDataset:
        return cls(
            records_in(records, split),
            recipe,
            classes,
            volume_loader=volume_loader,
            transform=transform,
            cache_dir=config.data.cache_dir,
            transform_key=transform_key,
        )

    collate = collate_slice_sets if config.data.unit == "slice-set" else None
    return DataBundle(
        train=make("train"),
        val=make("val"),
        test=make("test"),
        classes=classes,
        recipe=recipe,
        collate=collate,
    )


def control_slices(
    records: Sequence[Any], recipe: Any, volume_loader: Callable | None = None
) -> torch.Tensor:
    """All slices (N, 1, H, W) in [0, 1] of the control (Normal / non-COVID) records, via the recipe."""
    load = volume_loader or VolumeLoader(cache_size=1).volume
    chunks = [
        torch.as_tensor(recipe.prepare_slices(load(r)).array, dtype=torch.float32)
        for r in records
        if canonical_class(r.label) in CONTROL_CLASSES
    ]
    if not chunks:
        raise NoDataError(
            "The denoiser trains on control slices only, but this split has no Normal/non-COVID case."
        )
    return torch.cat(chunks)


def _denoise(
    config: TrainConfig,
    records: list[Any],
    recipe: Any,
    classes: tuple[str, ...],
    volume_loader: Callable | None,
) -> DataBundle:
    d = config.data
    common = {"amplitude": d.noise_amplitude, "fraction": d.noise_fraction, "scale": d.noise_scale}
    train = DenoiserDataset(
        control_slices(records_in(records, "train"), recipe, volume_loader), seed=config.seed, **common
    )
    val_records = records_in(records, "val")
    val = (
        DenoiserDataset(
            control_slices(val_records, recipe, volume_loader), seed=config.seed + 1, fixed=True, **common
        )
        if val_records
        else None
    )
    return DataBundle(train=train, val=val, classes=(), recipe=recipe)


def residual_transform(checkpoint_path: str, batch_size: int = 8) -> Callable[[torch.Tensor], torch.Tensor]:
    """(1, D, H, W) volume -> residual volume ``x - denoiser(x)`` with the stage-1 checkpoint."""
    from covidct.models import load_checkpoint
    from covidct.models.covidctnet import residual_map

    denoiser = load_checkpoint(checkpoint_path, expected_model="covidctnet-denoiser").model

    @torch.no_grad()
    def transform(volume: torch.Tensor) -> torch.Tensor:
        slices = volume.permute(1, 0, 2, 3)  # (D, 1, H, W)
        return residual_map(denoiser, slices, batch_size).permute(1, 0, 2, 3).contiguous()

    return transform


def _residuals(
    config: TrainConfig,
    records: list[Any],
    recipe: Any,
    classes: tuple[str, ...],
    volume_loader: Callable | None,
) -> DataBundle:
    import hashlib
    from pathlib import Path

    path = str(config.denoiser_checkpoint)
    key = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:8] if Path(path).is_file() else "missing"
    return _scans(
        config,
        records,
        recipe,
        classes,
        volume_loader,
        transform=residual_transform(path),
        transform_key=f"-res{key}",
    )


_BUILDERS: dict[str, Callable[..., DataBundle]] = {
    "slice": _slices,
    "scan": _scans,
    "slice-set": _scans,
    "denoise": _denoise,
    "residual": _residuals,
}
