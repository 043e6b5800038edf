"""t-SNE / PCA of penultimate features."""

from __future__ import annotations

import numpy as np
import pytest

from covidct.errors import ExplainError
from covidct.explain.embeddings import embed, embed_cohort, plot_embedding

from .conftest import REGION_2D, region_input


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_cohort_and_plot(method, model2d, tmp_path):
    positives = region_input(32, REGION_2D, 2, n=6, seed=1)
    negatives = positives.clone() * 0.1
    x = np.concatenate([positives.numpy(), negatives.numpy()])
    labels = np.array([1] * 6 + [0] * 5 + [1])  # the last negative is labelled 1: misclassified
    emb = embed_cohort(model2d, x, labels, method=method)
    assert emb.coords.shape == (12, 2)
    assert emb.misclassified.sum() == 1
    png = plot_embedding(emb, tmp_path / f"{method}.png")
    assert png.stat().st_size > 1000


def test_embed_errors():
    with pytest.raises(ExplainError, match="at least"):
        embed(np.zeros((2, 4)))
    with pytest.raises(ExplainError, match="Unknown embedding"):
        embed(np.random.default_rng(0).random((5, 4)), method="umap")
