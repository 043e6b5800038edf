"""Datasets over `CaseRecord`s + a preprocessing `Recipe`.

Every item is a dict: ``input`` (tensor), ``target`` (class index, or the clean slice for the
denoiser), ``index`` (dataset index, to map predictions back to records) and, for slice sets,
``mask`` after collation. Augmentation randomness is seeded per (seed, epoch, index), so a run is
reproducible and a resumed run sees the same samples as an uninterrupted one.

Files are read through the io layer (`default_loader`); tests inject in-memory loaders.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from covidct.classes import COVID, NON_COVID, class_index
from covidct.errors import ConfigError, ShapeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_CACHE_SIZE = 4


@dataclass(frozen=True)
class SliceRef:
    """One 2D sample: a record and, for volume records, the slice index."""

    record: Any
    slice_index: int | None = None


COUNTERFACTUAL_STREAM = 1
"""Extra seed word of the counterfactual draw, so it is independent of the augmentation's."""


def epoch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of item ``index`` in ``epoch`` (independent of worker and rank)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class VolumeLoader:
    """Reads records through covidct.io, caching the last few volumes (slices share a volume)."""

    def __init__(self, cache_size: int = VOLUME_CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def volume(self, record: Any) -> Any:
        """The `Volume` of ``record.path`` (a DICOM series, NIfTI, or a 2D image as one slice)."""
        key = str(record.path)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        from covidct.io import read_volume

        vol = read_volume(record.path)
        self._cache[key] = vol
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return vol

    def image(self, ref: SliceRef) -> tuple[np.ndarray, bool]:
        """(2D array, is_hu) of one slice reference."""
        path = Path(str(ref.record.path))
        if path.suffix.lower() in IMAGE_SUFFIXES:
            from covidct.io import read_image

            return np.asarray(read_image(path), dtype=np.float32), False
        vol = self.volume(ref.record)
        index = 0 if ref.slice_index is None else int(ref.slice_index)
        if not 0 <= index < vol.num_slices:
            raise ShapeError(f"Slice {index} of {path} does not exist (it has {vol.num_slices} slices).")
        return vol.array[index], bool(vol.is_hu)

    def __call__(self, ref: SliceRef) -> tuple[np.ndarray, bool]:
        return self.image(ref)


class CachedSliceLoader:
    """Reads slices from decoded slice caches (`covidct.io.slice_cache`), by image file name;
    images not in any cache go to ``fallback`` (default: a `VolumeLoader` reading files).

    Returns ``(uint8 (H, W) view, False)``: cached images are 8-bit grey, as the PNGs were.
    """

    def __init__(
        self, caches: Sequence[Any], fallback: Callable[[SliceRef], tuple[np.ndarray, bool]] | None = None
    ) -> None:
        self.caches = list(caches)
        self.fallback = fallback or VolumeLoader()

    def __call__(self, ref: SliceRef) -> tuple[np.ndarray, bool]:
        name = Path(str(ref.record.path)).name
        for cache in self.caches:
            index = cache.find(name)
            if index is not None:
                return cache.image(index), False
        return self.fallback(ref)


def slice_refs(records: Sequence[Any], loader: VolumeLoader | None = None) -> list[SliceRef]:
    """One `SliceRef` per 2D sample: image records and records with a slice index as they are,
    other volume records expanded to every slice."""
    refs: list[SliceRef] = []
    for rec in records:
        si = getattr(rec, "slice_index", None)
        if si is not None or Path(str(rec.path)).suffix.lower() in IMAGE_SUFFIXES:
            refs.append(SliceRef(rec, si))
        else:
            vol = (loader or VolumeLoader()).volume(rec)
            refs.extend(SliceRef(rec, i) for i in range(vol.num_slices))
    return refs


def _to_tensor(array: Any) -> torch.Tensor:
    tensor = torch.as_tensor(np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array)
    return tensor.to(torch.float32)


class SliceDataset(Dataset):
    """2D classification samples: ``recipe.prepare_image`` on each slice (augmented iff ``augment``).

    Args:
        refs: the slices (`slice_refs`).
        recipe: a slice recipe (``prepare_image(img, is_hu=..., box=..., rng=...) -> (3, H, W)``).
        classes: the task's class names (targets are indices into it).
        loader: ``ref -> (2D array, is_hu)``; default reads files through covidct.io.
        augment: apply the recipe's training augmentation.
        seed: base seed of the per-(epoch, index) augmentation generators.
        counterfactual: probability that a sample is replaced by its other-class counterfactual
            (`covidct.training.counterfactual`; binary classes only), drawn per (epoch, index).
    """

    def __init__(
        self,
        refs: Sequence[SliceRef],
        recipe: Any,
        classes: Sequence[str],
        *,
        loader: Callable[[SliceRef], tuple[np.ndarray, bool]] | None = None,
        augment: bool = False,
        seed: int = 0,
        counterfactual: float = 0.0,
    ) -> None:
        self.refs = list(refs)
        self.recipe = recipe
        self.classes = tuple(classes)
        self.loader = loader or VolumeLoader()
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.labels = [class_index(r.record.label, self.classes) for r in self.refs]
        self.counterfactual = float(counterfactual)
        if self.counterfactual and set(self.classes) != {COVID, NON_COVID}:
            raise ConfigError(f"counterfactual slices need the binary classes, not {self.classes}.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.refs)

    def record(self, index: int) -> Any:
        return self.refs[index].record

    def slice_index(self, index: int) -> int | None:
        return self.refs[index].slice_index

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.refs[index]
        img, is_hu = self.loader(ref)
        target = self.labels[index]
        if self.counterfactual:
            img, is_hu, target = self._maybe_counterfactual(img, is_hu, target, index)
        rng = epoch_rng(self.seed, self.epoch, index) if self.augment else None
        box = getattr(ref.record, "box", None)
        x = self.recipe.prepare_image(img, is_hu=is_hu, box=box, rng=rng)
        return {"input": _to_tensor(x), "target": target, "index": index}

    def _maybe_counterfactual(
        self, img: np.ndarray, is_hu: bool, target: int, index: int
    ) -> tuple[np.ndarray, bool, int]:
        """With probability ``counterfactual`` the other class's version of the slice (as 8-bit grey)
        and its target; the sample as it is when the draw says no or no counterfactual can be made."""
        from covidct.training.counterfactual import counterfactual_slice

        rng = np.random.default_rng([self.seed, self.epoch, index, COUNTERFACTUAL_STREAM])
        if rng.random() >= self.counterfactual:
            return img, is_hu, target
        is_covid = self.classes[target] == COVID
        edited = counterfactual_slice(self.recipe.to_uint8(img, is_hu=is_hu), is_covid, rng)
        if edited is None:
            return img, is_hu, target
        return edited, False, self.classes.index(NON_COVID if is_covid else COVID)


def _recipe_key(recipe: Any) -> str:
    text = json.dumps(
        recipe.to_dict() if hasattr(recipe, "to_dict") else repr(recipe), sort_keys=True, default=str
    )
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class ScanDataset(Dataset):
    """Scan classification samples: ``recipe.prepare_volume(volume)`` (optionally transformed),
    cached in memory and, with ``cache_dir``, on disk (keyed by case id and the recipe).

    Args:
        transform: tensor -> tensor applied after the recipe (e.g. CovidCTNet residuals).
        volume_loader: ``record -> Volume``; default reads through covidct.io.
    """

    def __init__(
        self,
        records: Sequence[Any],
        recipe: Any,
        classes: Sequence[str],
        *,
        volume_loader: Callable[[Any], Any] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | Path | None = None,
        transform_key: str = "",
    ) -> None:
        self.records = list(records)
        self.recipe = recipe
        self.classes = tuple(classes)
        self.volume_loader = volume_loader or VolumeLoader(cache_size=1).volume
        self.transform = transform
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._key = _recipe_key(recipe) + transform_key
        self._memory: dict[int, torch.Tensor] = {}
        self.labels = [class_index(r.label, self.classes) for r in self.records]

    def set_epoch(self, epoch: int) -> None:  # no augmentation on scans
        pass

    def __len__(self) -> int:
        return len(self.records)

    def record(self, index: int) -> Any:
        return self.records[index]

    def slice_index(self, index: int) -> int | None:
        return None

    def _disk_path(self, index: int) -> Path | None:
        if self.cache_dir is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(self.records[index].case_id))
        return self.cache_dir / f"{safe}-{self._key}.pt"

    def prepared(self, index: int) -> torch.Tensor:
        """The prepared (and transformed) tensor of item ``index``, from cache when possible."""
        if index in self._memory:
            return self._memory[index]
        disk = self._disk_path(index)
        if disk is not None and disk.is_file():
            tensor = torch.load(disk, weights_only=True)
        else:
            tensor = _to_tensor(self.recipe.prepare_volume(self.volume_loader(self.records[index])).array)
            if self.transform is not None:
                tensor = self.transform(tensor)
            if disk is not None:
                disk.parent.mkdir(parents=True, exist_ok=True)
                torch.save(tensor, disk)
        self._memory[index] = tensor
        return tensor

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input": self.prepared(index), "target": self.labels[index], "index": index}


class SliceSetDataset(ScanDataset):
    """ai-corona samples: the recipe's slice set (S, 3, H, W) per scan; batch with `collate_slice_sets`."""


def collate_slice_sets(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad slice sets to the longest one: input (N, S_max, 3, H, W), mask (N, S_max) bool."""
    longest = max(item["input"].shape[0] for item in items)
    first = items[0]["input"]
    batch = first.new_zeros((len(items), longest, *first.shape[1:]))
    mask = torch.zeros((len(items), longest), dtype=torch.bool)
    for i, item in enumerate(items):
        n = item["input"].shape[0]
        batch[i, :n] = item["input"]
        mask[i, :n] = True
    return {
        "input": batch,
        "mask": mask,
        "target": torch.as_tensor([item["target"] for item in items]),
        "index": torch.as_tensor([item["index"] for item in items]),
    }


class DenoiserDataset(Dataset):
    """CovidCTNet stage 1: control slices; a seeded ``noise_fraction`` of them get Perlin noise.

    Item: ``input`` = slice (+ noise, clipped to [0, 1]), ``target`` = the clean slice, both (1, H, W).
    Which slices are noisy, and the noise, are drawn per (seed, epoch, index); with ``fixed=True``
    (validation) the epoch is ignored so the held-out set never changes.
    """

    def __init__(
        self,
        slices: torch.Tensor,
        *,
        amplitude: float = 0.15,
        fraction: float = 0.5,
        scale: float = 32.0,
        seed: int = 0,
        fixed: bool = False,
        refs: Sequence[SliceRef] | None = None,
    ) -> None:
        if slices.ndim != 4 or slices.shape[1] != 1:
            raise ShapeError(f"DenoiserDataset expects slices (N, 1, H, W) but got {tuple(slices.shape)}.")
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"noise_fraction must be in [0, 1], got {fraction}.")
        self.slices = slices.to(torch.float32)
        self.amplitude = amplitude
        self.fraction = fraction
        self.scale = scale
        self.seed = seed
        self.fixed = fixed
        self.refs = list(refs) if refs is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.slices.shape[0])

    def record(self, index: int) -> Any:
        return self.refs[index].record if self.refs else None

    def slice_index(self, index: int) -> int | None:
        return self.refs[index].slice_index if self.refs else index

    def noisy(self, index: int) -> tuple[torch.Tensor, bool]:
        """(input slice, whether noise was added) of item ``index``."""
        from covidct.preprocessing.augment import perlin_noise

        clean = self.slices[index]
        rng = epoch_rng(self.seed, 0 if self.fixed else self.epoch, index)
        if rng.random() >= self.fraction:
            return clean, False
        noise = perlin_noise(tuple(clean.shape[-2:]), scale=self.scale, seed=int(rng.integers(2**31)))
        return (clean + self.amplitude * torch.from_numpy(noise)[None]).clamp(0.0, 1.0), True

    def __getitem__(self, index: int) -> dict[str, Any]:
        x, _ = self.noisy(index)
        return {"input": x, "target": self.slices[index], "index": index}
