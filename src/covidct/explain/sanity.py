"""Sanity checks for heatmaps: model-parameter randomisation and deletion / insertion curves.

* Randomisation (Adebayo et al. 2018): re-initialise every weight of a copy of the model and recompute
  the heatmap. A method that explains the model must give a different map: we report the Spearman
  rank correlation of the two maps and pass when its absolute value is below `RANDOMISATION_MAX_CORRELATION`.
* Deletion / insertion (Petsiuk et al. 2018): remove (set to a constant baseline) the hottest voxels
  first in `CURVE_STEPS` steps and record the explained class probability; insertion starts from the
  baseline and restores the hottest first. Area under each curve (x in [0, 1]): low deletion AUC and
  high insertion AUC mean the heatmap found what the model uses.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from covidct.explain.methods import compute_heatmap, expand_mask, infer_layout, predict_probs

RANDOMISATION_MAX_CORRELATION = 0.5
CURVE_STEPS = 20
RANDOM_SEED = 0


def randomised_copy(model: nn.Module, seed: int = RANDOM_SEED) -> nn.Module:
    """Deep copy of ``model`` with every parameter re-drawn from N(0, std of that parameter (or 0.05))."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in clone.parameters():
            std = float(param.std()) if param.numel() > 1 and float(param.std()) > 0 else 0.05
            param.copy_(torch.randn(param.shape, generator=gen) * std)
    return clone


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps (0.0 when either is constant)."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    from scipy.stats import spearmanr  # ~0.4 s to import: only when a sanity check runs

    return float(spearmanr(a, b).statistic)


@dataclass
class SanityReport:
    """Numbers of the sanity checks for one method and one input item (JSON-able via ``to_dict``)."""

    method: str
    randomisation_correlation: float
    randomisation_passed: bool
    deletion_auc: float
    insertion_auc: float
    deletion_curve: list[float]
    insertion_curve: list[float]

    def to_dict(self, curves: bool = False) -> dict:
        d = asdict(self)
        if not curves:
            d.pop("deletion_curve")
            d.pop("insertion_curve")
        return d


def randomisation_test(
    method: str, model: nn.Module, item: torch.Tensor, target: int, heatmap: np.ndarray, **options
) -> tuple[float, bool]:
    """(Spearman correlation between ``heatmap`` and the randomised model's map, passed?)."""
    rand = compute_heatmap(method, randomised_copy(model), item, target, **options).heatmap[0]
    corr = rank_correlation(heatmap, rand)
    return corr, bool(abs(corr) < RANDOMISATION_MAX_CORRELATION)


def deletion_insertion(
    model: nn.Module,
    item: torch.Tensor,
    target: int,
    heatmap: np.ndarray,
    *,
    steps: int = CURVE_STEPS,
    baseline: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Deletion and insertion curves: p(target) at fractions 0, 1/steps, ..., 1 of voxels removed/restored.

    Args:
        item: one input (1, ...) in the model's layout; heatmap: its map (*spatial).
    """
    layout = infer_layout(model, item)
    order = np.argsort(-np.ravel(heatmap), kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    ranks_t = torch.as_tensor(ranks.reshape(heatmap.shape))
    cut = [round(k * order.size / steps) for k in range(steps + 1)]
    top = torch.stack([ranks_t < c for c in cut])  # (steps+1, *spatial): hottest c voxels
    mask = expand_mask(top, layout)
    full = item.expand(len(cut), *item.shape[1:])
    fill = torch.tensor(baseline, dtype=item.dtype)
    deletion = predict_probs(model, torch.where(mask, fill, full))[:, target].tolist()
    insertion = predict_probs(model, torch.where(mask, full, fill))[:, target].tolist()
    return deletion, insertion


def curve_auc(curve: list[float]) -> float:
    """Trapezoid area under a curve sampled uniformly on [0, 1]."""
    y = np.asarray(curve, dtype=np.float64)
    return float(np.trapezoid(y, dx=1.0 / max(len(y) - 1, 1)))


def sanity_checks(
    method: str, model: nn.Module, item: torch.Tensor, target: int, heatmap: np.ndarray, **options
) -> SanityReport:
    """All sanity checks of ``heatmap`` (*spatial), computed by ``method`` on ``item`` (1, ...)."""
    corr, passed = randomisation_test(method, model, item, target, heatmap, **options)
    deletion, insertion = deletion_insertion(model, item, target, heatmap)
    return SanityReport(
        method=method,
        randomisation_correlation=round(corr, 4),
        randomisation_passed=passed,
        deletion_auc=round(curve_auc(deletion), 4),
        insertion_auc=round(curve_auc(insertion), 4),
        deletion_curve=[round(v, 5) for v in deletion],
        insertion_curve=[round(v, 5) for v in insertion],
    )
