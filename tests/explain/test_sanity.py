"""Sanity checks: model randomisation and deletion / insertion curves."""

from __future__ import annotations

import numpy as np
import torch

from covidct.explain.methods import compute_heatmap
from covidct.explain.sanity import curve_auc, deletion_insertion, randomised_copy, sanity_checks


def test_randomisation_changes_gradcam(model2d, x2d):
    result = compute_heatmap("gradcam", model2d, x2d[:1])
    report = sanity_checks("gradcam", model2d, x2d[:1], 1, result.heatmap[0])
    assert report.randomisation_passed
    assert report.randomisation_correlation < 0.5
    assert report.deletion_auc < report.insertion_auc
    assert len(report.deletion_curve) == 21


def test_randomised_copy_leaves_the_original(model2d):
    before = [p.detach().clone() for p in model2d.parameters()]
    clone = randomised_copy(model2d)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model2d.parameters(), strict=True))
    assert not any(torch.equal(a.detach(), b) for a, b in zip(clone.parameters(), before, strict=True))


def test_good_map_deletes_faster_than_random(model2d, x2d):
    good = compute_heatmap("occlusion", model2d, x2d[:1]).heatmap[0]
    rand = np.random.default_rng(0).random(good.shape)
    del_good, _ = deletion_insertion(model2d, x2d[:1], 1, good)
    del_rand, _ = deletion_insertion(model2d, x2d[:1], 1, rand)
    assert curve_auc(del_good) < curve_auc(del_rand)


def test_curve_auc():
    assert curve_auc([1.0, 1.0, 1.0]) == 1.0
    assert abs(curve_auc([1.0, 0.0]) - 0.5) < 1e-9
