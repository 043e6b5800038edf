"""Source-adversarial training: features that cannot tell the training sources apart within a class.

A model trained on a few sources learns the source (scanner, export, figure crop) when the source
predicts the label (docs/results.md, issue 11). Here a small head tries to name each training slice's
source from the backbone's pooled features, *separately for each class*, and its gradient reaches
the backbone reversed: the backbone is pushed towards features whose source cannot be read off
within a class, so a COVID-19 slice from a lung-cropped JPG and one from a DICOM series should look
alike to the classifier. This is DANN (Ganin et al., JMLR 2016, gradient reversal) in its
class-conditional form (Li et al., ECCV 2018, CIDDG): conditioning on the class keeps the features
that separate the classes even where a source holds one class only. Each sample's loss is weighted
so that every source has the same total weight within its class: otherwise the head can sit on the
largest source (UCSD is three quarters of some folds) and the reversed gradient barely touches the
small one-class sources whose look is the cue.

Config: ``source_adversary: 0.3`` (the largest reversal strength; 0 = off). The strength ramps from 0
with DANN's schedule ``2 / (1 + exp(-10 p)) - 1`` over the run's progress ``p`` in [0, 1]. The head is
a training aid only: it is not saved in ``best.ckpt`` and inference never sees it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from covidct.errors import ConfigError

HIDDEN = 64
"""Width of each class's source head (layer norm of the features, one hidden layer): without the norm
and at the backbone's rate the head reached only 0.50 source-balanced accuracy (chance 0.33) after
two unopposed epochs on the cohort's UCSD fold, with both 0.77: too weak before to oppose anything."""
ADVERSARY_LR_SCALE = 10.0
"""The head learns at 10x the backbone's rate (a common DANN choice), so it keeps up with it."""
RAMP_RATE = 10.0
"""DANN's ramp: strength = max * (2 / (1 + exp(-RAMP_RATE * progress)) - 1)."""


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``-strength`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """``x`` unchanged; its gradient multiplied by ``-strength`` on the way back."""
    return _ReverseGradient.apply(x, float(strength))


def ramp(progress: float) -> float:
    """DANN's schedule from 0 (start) towards 1 (end of training); ``progress`` in [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-RAMP_RATE * p)) - 1.0


class SourceAdversary(nn.Module):
    """One source classifier per class on (N, F) pooled features.

    Args:
        num_features: F, the backbone's pooled feature width (``model.num_features``).
        num_classes: classes of the task; sample ``i`` goes to head ``target[i]``.
        sources: the training sources, in the order of the source indices.
    """

    def __init__(self, num_features: int, num_classes: int, sources: Sequence[str]) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(num_features, elementwise_affine=False),
                          nn.Linear(num_features, HIDDEN), nn.ReLU(inplace=True),
                          nn.Linear(HIDDEN, len(sources)))
            for _ in range(num_classes)
        )

    def forward(self, pooled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, F) features and (N,) class indices -> (N, S) source logits, each from its class's head."""
        logits = pooled.new_zeros((pooled.shape[0], len(self.sources)))
        for cls, head in enumerate(self.heads):
            rows = target == cls
            if rows.any():
                logits[rows] = head(pooled[rows]).to(logits.dtype)
        return logits

    def loss(self, pooled: torch.Tensor, target: torch.Tensor, source: torch.Tensor, strength: float,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """Weighted cross-entropy of naming each sample's source (``weight``: (N,), default 1), through
        a reversed gradient of ``strength``; returns the loss and the weight of the samples whose
        source the head named right (for the training log)."""
        logits = self(reverse_gradient(pooled.float(), strength), target)
        weight = torch.ones_like(source, dtype=logits.dtype) if weight is None else weight.to(logits.dtype)
        per_sample = nn.functional.cross_entropy(logits, source, reduction="none")
        correct = float((weight * (logits.detach().argmax(1) == source)).sum())
        return (weight * per_sample).sum() / weight.sum().clamp_min(1e-12), correct


def training_sources(dataset: Any) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
    """The sorted sources of a training dataset, the (N,) source index of each sample, and (N,)
    weights giving every source the same total weight within each class (mean weight 1 per class)."""
    if not hasattr(dataset, "record") or getattr(dataset, "labels", None) is None:
        raise ConfigError("source_adversary needs a dataset whose records name their source and class.")
    names = [str(getattr(dataset.record(i), "source", None) or "") for i in range(len(dataset))]
    sources = tuple(sorted(set(names)))
    if len(sources) < 2:
        raise ConfigError(f"source_adversary needs at least two training sources, found {list(sources)}.")
    lookup = {s: i for i, s in enumerate(sources)}
    cells = [(int(c), n) for c, n in zip(dataset.labels, names, strict=True)]
    cell_count = Counter(cells)
    class_count = Counter(c for c, _ in cells)
    sources_in = Counter(c for c, _ in cell_count)
    weights = [class_count[c] / (sources_in[c] * cell_count[(c, n)]) for c, n in cells]
    return (sources, torch.as_tensor([lookup[n] for n in names], dtype=torch.long),
            torch.as_tensor(weights, dtype=torch.float32))


def build_adversary(model: nn.Module, num_classes: int, sources: Sequence[str]) -> SourceAdversary:
    """A `SourceAdversary` for ``model``: a 2D slice model (one input tensor, no slice-set mask) with
    timm's ``num_features`` and ``forward_head(features, pre_logits=True)``."""
    if getattr(model, "unit", None) != "slice":
        raise ConfigError(f"source_adversary is for 2D slice models; {type(model).__name__} reads "
                          f"{getattr(model, 'unit', 'unknown')!r} inputs.")
    width = getattr(model, "num_features", None)
    if not isinstance(width, int) or not hasattr(model, "forward_head"):
        raise ConfigError("source_adversary needs a model with num_features and "
                          f"forward_head(pre_logits=True); {type(model).__name__} has not.")
    return SourceAdversary(width, num_classes, sources)
