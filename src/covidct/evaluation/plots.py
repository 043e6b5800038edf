"""PNG figures with matplotlib's Agg backend (imported lazily: plots are an optional extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covidct.evaluation.metrics import calibration_curve, roc_curve
from covidct.extras import require_extra

FIGURE_DPI = 110
FIGURE_SIZE = (5.0, 4.5)
BAND_ALPHA = 0.25
FPR_GRID_POINTS = 101


def _pyplot():
    require_extra("report", "matplotlib", feature="covidct evaluate's plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    _pyplot().close(fig)
    return path


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(int(v)), ha="center", va="center", color="black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("Confusion matrix (patients)")
    return _save(fig, path)


def roc_band(
    y_true: np.ndarray, score: np.ndarray, indices: np.ndarray, level: float
) -> tuple[np.ndarray, ...]:
    """Pointwise bootstrap band of TPR on a fixed FPR grid (resamples with both classes only)."""
    grid = np.linspace(0, 1, FPR_GRID_POINTS)
    curves = []
    for row in indices:
        yt = y_true[row]
        if yt.all() or not yt.any():
            continue
        fpr, tpr, _ = roc_curve(yt, score[row])
        curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        return grid, np.full_like(grid, np.nan), np.full_like(grid, np.nan)
    lo, hi = np.percentile(np.array(curves), [50 * (1 - level), 50 * (1 + level)], axis=0)
    return grid, lo, hi


def plot_roc(
    y_true,
    score,
    path: Path,
    *,
    band=None,
    label: str = "model",
    reader_points=None,
    operating_point: tuple[float, float] | None = None,
) -> Path:
    """Model ROC (optional bootstrap band); readers as points, hollow without AI, filled with AI."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    fpr, tpr, _ = roc_curve(y_true, score)
    ax.plot(fpr, tpr, color="C0", label=label)
    if band is not None:
        ax.fill_between(band[0], band[1], band[2], color="C0", alpha=BAND_ALPHA, label="95% bootstrap band")
    if operating_point is not None:
        ax.plot(
            *operating_point,
            marker="*",
            color="black",
            markersize=12,
            linestyle="none",
            label="operating point",
        )
    for i, name in enumerate(sorted({p["reader"] for p in reader_points or []})):
        for p in (q for q in reader_points if q["reader"] == name):
            ax.plot(
                p["fpr"],
                p["tpr"],
                marker="o",
                markersize=8,
                linestyle="none",
                color=f"C{(i + 1) % 10}",
                markerfacecolor=f"C{(i + 1) % 10}" if p["with_ai"] else "none",
                label=f"{name} ({'with' if p['with_ai'] else 'without'} AI)",
            )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("Sensitivity")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("ROC (patients)")
    return _save(fig, path)


def plot_calibration(y_true, prob, path: Path, *, n_bins: int) -> Path:
    plt = _pyplot()
    frac, mean_p, _ = calibration_curve(y_true, prob, n_bins=n_bins)
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    ax.plot(mean_p, frac, marker="o", label="model")
    ax.set_xlabel("Mean predicted probability")
    ax.set_ylabel("Fraction positive")
    ax.set_title("Reliability curve")
    ax.legend()
    return _save(fig, path)
