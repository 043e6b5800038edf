"""Embeddings of a cohort's penultimate features (t-SNE and PCA), plotted by class, errors marked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covidct.errors import ExplainError

TSNE_MAX_PERPLEXITY = 30.0
EMBED_BATCH = 16
SEED = 0
MIN_ITEMS = 3


@dataclass
class Embedding:
    """2D coordinates (N, 2) of N items by ``method`` ('tsne' or 'pca'), with labels and predictions."""

    method: str
    coords: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    class_names: tuple[str, ...]

    @property
    def misclassified(self) -> np.ndarray:
        return self.labels != self.predicted


def _pooled(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Penultimate vector (N, D): ``forward_head(..., pre_logits=True)``, else features pooled/flattened."""
    try:
        return model.forward_head(features, pre_logits=True)
    except TypeError:
        return features.mean(dim=tuple(range(2, features.ndim))) if features.ndim > 2 else features


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), predicted class (N,)) from ``model.forward_features`` on inputs ``x`` (N, ...)."""
    if not hasattr(model, "forward_features"):
        raise ExplainError(
            f"{type(model).__name__} has no forward_features; embeddings need a covidct model."
        )
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    model.eval()
    feats, preds = [], []
    for i in range(0, len(x), EMBED_BATCH):
        f = model.forward_features(x[i : i + EMBED_BATCH])
        feats.append(_pooled(model, f).flatten(1).float())
        preds.append(model.forward_head(f).argmax(1))
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def embed(features: np.ndarray, method: str = "tsne", seed: int = SEED) -> np.ndarray:
    """2D coordinates (N, 2) of features (N, D) by t-SNE (perplexity min(30, (N-1)/3)) or PCA."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < MIN_ITEMS:
        raise ExplainError(f"Embeddings need at least {MIN_ITEMS} feature vectors (N, D); got {feats.shape}.")
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=min(2, feats.shape[1]), random_state=seed).fit_transform(feats)
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(TSNE_MAX_PERPLEXITY, max(1.0, (len(feats) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(feats)
    raise ExplainError(f"Unknown embedding method {method!r}; use 'tsne' or 'pca'.")


def embed_cohort(
    model: nn.Module, x: torch.Tensor | np.ndarray, labels: np.ndarray, method: str = "tsne"
) -> Embedding:
    """Embed a cohort: inputs ``x`` (N, ...) prepared for ``model``, true class indices ``labels`` (N,)."""
    feats, preds = extract_features(model, x)
    labels = np.asarray(labels).astype(int)
    if len(labels) != len(feats):
        raise ExplainError(f"{len(labels)} labels for {len(feats)} inputs; give one label per input.")
    names = tuple(getattr(model, "class_names", ())) or tuple(str(c) for c in sorted(set(labels)))
    return Embedding(method, embed(feats, method), labels, preds, names)


def plot_embedding(emb: Embedding, path: str | Path, title: str | None = None) -> Path:
    """Scatter plot PNG: one colour per true class, misclassified items drawn as black-edged crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for k, name in enumerate(emb.class_names):
        sel = emb.labels == k
        if sel.any():
            ax.scatter(*emb.coords[sel & ~emb.misclassified].T, s=18, label=name, color=f"C{k}")
            ax.scatter(
                *emb.coords[sel & emb.misclassified].T, s=50, marker="X", color=f"C{k}", edgecolors="k"
            )
    ax.scatter([], [], marker="X", color="w", edgecolors="k", label="misclassified")
    ax.legend(fontsize=8)
    ax.set_title(title or f"{emb.method.upper()} of penultimate features")
    ax.set_xticks([])
    ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
