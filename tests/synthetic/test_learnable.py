"""A tiny CNN learns the phantom classes from 64 px covidnet-ct2 slices (slow: ~2-3 min on 1 core).

No augmentation: 8 patients per class are few; 20 epochs, Adam with a one-cycle schedule.

Run: .venv/bin/python -m pytest tests/synthetic/test_learnable.py -m slow -s -q
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from covidct.classes import CLASSES_3, class_index
from covidct.preprocessing import get_recipe
from covidct.synthetic import make_phantom

SHAPE, SPACING = (24, 128, 128), (4.0, 1.2, 1.2)
N_TRAIN, N_TEST = 8, 4
EPOCHS = 20
MIN_LESION_VOXELS = 50


def _slices(label: str, seed: int, recipe):
    """Slices of one phantom labelled like COVIDx: lesion slices for COVID/CP, lung slices for Normal."""
    p = make_phantom(label, shape=SHAPE, spacing=SPACING, seed=seed)
    les = p.lesion_mask.sum(axis=(1, 2))
    lung = (p.lung_mask > 0).sum(axis=(1, 2))
    keep = np.nonzero(les > MIN_LESION_VOXELS)[0] if les.any() else np.nonzero(lung > lung.max() * 0.3)[0]
    x = np.stack([recipe.prepare_image(p.volume.array[k], is_hu=True) for k in keep])
    return x, class_index(label, CLASSES_3)


def _net() -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 3))


@pytest.mark.slow
def test_tiny_cnn_learns_phantom_classes():
    torch.manual_seed(0)
    t0 = time.perf_counter()
    recipe = get_recipe("covidnet-ct2", size=64)
    labels = ("normal", "cp", "covid")
    train = [_slices(lab, 1000 + i, recipe) for lab in labels for i in range(N_TRAIN)]
    test = [(lab, _slices(lab, 5000 + i, recipe)) for lab in labels for i in range(N_TEST)]
    x = torch.from_numpy(np.concatenate([s for s, _ in train]))
    y = torch.tensor(np.concatenate([[c] * len(s) for s, c in train]))
    counts = np.bincount(y.numpy(), minlength=3)
    weights = torch.tensor(counts.sum() / (3.0 * counts), dtype=torch.float32)
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = EPOCHS * ((len(x) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    for _epoch in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    correct_slices, n_slices, correct_patients = 0, 0, 0
    with torch.no_grad():
        for _lab, (s, c) in test:
            probs = model(torch.from_numpy(s)).softmax(1)
            correct_slices += int((probs.argmax(1) == c).sum())
            n_slices += len(s)
            correct_patients += int(int(probs.mean(0).argmax()) == c)
    slice_acc = correct_slices / n_slices
    patient_acc = correct_patients / len(test)
    print(f"\nphantom slices: train {len(x)} (per class {counts.tolist()}), test {n_slices}; "
          f"slice accuracy {slice_acc:.3f}, patient accuracy {patient_acc:.3f} "
          f"({correct_patients}/{len(test)}), {time.perf_counter() - t0:.0f} s")
    assert slice_acc > 0.7 and patient_acc > 0.8
