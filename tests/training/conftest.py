"""Training fixtures: 64 px slices rendered from synthetic phantoms of each class (session cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from covidct.classes import CLASSES_3, COVID, NORMAL, PNEUMONIA
from covidct.io.cohort import CaseRecord
from covidct.preprocessing import get_recipe

SIZE = 64
PHANTOM_SHAPE = (16, SIZE, SIZE)
PHANTOM_SPACING = (6.25, 2.4, 2.4)  # same field of view as the default 40x192x192 phantom
PATIENTS_PER_CLASS = 10
SLICES_PER_PATIENT = 4
MIN_LESION_PIXELS = 20
NORMAL_SLICES = (7, 9, 11, 13)
WINDOW_LOW, WINDOW_WIDTH = -1350.0, 1500.0  # lung window -600 / 1500


def make_record(**kwargs: Any) -> CaseRecord:
    return CaseRecord(**kwargs)


@dataclass
class PhantomSlices:
    """Records (one per slice) and the HU slices, keyed by (path, slice index)."""

    records: list
    images: dict
    volumes: dict

    def loader(self, ref: Any) -> tuple[np.ndarray, bool]:
        return self.images[(ref.record.path, ref.slice_index)], True


def _chosen_slices(phantom: Any, label: str) -> list[int]:
    if label == NORMAL:
        return list(NORMAL_SLICES)
    area = phantom.lesion_mask.sum(axis=(1, 2))
    ranked = [int(z) for z in np.argsort(-area, kind="stable") if area[z] >= MIN_LESION_PIXELS]
    return sorted(ranked[:SLICES_PER_PATIENT])


@pytest.fixture(scope="session")
def phantom_slices() -> PhantomSlices:
    from covidct.synthetic import make_phantom

    records, images, volumes = [], {}, {}
    for ci, label in enumerate(CLASSES_3):
        for p in range(PATIENTS_PER_CLASS):
            pid = f"{label[:3].lower()}{p:02d}"
            ph = make_phantom(label, shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING, seed=100 * ci + p)
            path = f"synthetic://{pid}"
            volumes[path] = ph
            for z in _chosen_slices(ph, label):
                images[(path, z)] = ph.volume.array[z].astype(np.float32)
                records.append(
                    make_record(
                        case_id=f"{pid}-z{z:02d}",
                        path=path,
                        label=label,
                        patient_id=pid,
                        source="phantom",
                        slice_index=z,
                    )
                )
    return PhantomSlices(records, images, volumes)


class TinySliceRecipe:
    """Fallback slice recipe (lung window, flip augmentation, resize) if preprocessing is absent."""

    name = "tiny-test"
    unit = "slice"

    def __init__(self, size: int = SIZE) -> None:
        self.size = size

    def prepare_image(
        self, img: np.ndarray, *, is_hu: bool, box: Any = None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        x = np.clip((img - WINDOW_LOW) / WINDOW_WIDTH, 0, 1) if is_hu else img / 255.0
        if rng is not None and rng.random() < 0.5:
            x = x[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
        t = torch.nn.functional.interpolate(
            t, size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        return t[0].expand(3, -1, -1).numpy()

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size}


@pytest.fixture(scope="session")
def slice_recipe() -> Any:
    """The real covidnet-ct2 recipe at 64 px."""
    return get_recipe("covidnet-ct2", size=SIZE)


@pytest.fixture(scope="session")
def record_factory() -> Any:
    """`make_record`: builds a CaseRecord (or the stand-in) from keyword fields."""
    return make_record


@pytest.fixture(scope="session")
def tiny_recipe() -> TinySliceRecipe:
    """A fast 32 px recipe for engine mechanics tests (resume, NaN, DDP)."""
    return TinySliceRecipe(size=32)


@pytest.fixture(scope="session")
def control_slices(phantom_slices: PhantomSlices) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) Normal-phantom slices (N, 1, 64, 64) in [0, 1] (lung window)."""
    normals = [ph for path, ph in phantom_slices.volumes.items() if ph.label == NORMAL]
    stacks = []
    for ph in normals:
        vol = np.clip((ph.volume.array[4:14] - WINDOW_LOW) / WINDOW_WIDTH, 0, 1).astype(np.float32)
        stacks.append(torch.from_numpy(vol)[:, None])
    return torch.cat(stacks[:7]), torch.cat(stacks[7:])


__all__ = ["COVID", "PNEUMONIA", "PhantomSlices", "make_record"]
