"""Coverage of nominal 95% intervals on simulated data (slow; run by hand with ``-m slow -s``).

Binormal model: negatives ~ N(0, 1), positives ~ N(d, 1); true AUC = Phi(d / sqrt(2)); a case is called
positive when its score >= c, so true sensitivity = 1 - Phi(c - d).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from covidct.evaluation.intervals import bootstrap_metrics, delong_interval, wilson_interval

N_DATASETS = 500
N_PATIENTS = 200
PREVALENCE = 0.4
SEPARATION = 1.5
CUTOFF = 0.8
N_BOOT = 2000
COVERAGE_RANGE = (0.93, 0.97)


def simulate_coverage(method: str = "percentile", seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    true_auc = stats.norm.cdf(SEPARATION / math.sqrt(2))
    true_sens = stats.norm.sf(CUTOFF - SEPARATION)
    hits = {"sensitivity_bootstrap": 0, "auc_bootstrap": 0, "sensitivity_wilson": 0, "auc_delong": 0}
    for i in range(N_DATASETS):
        y = (rng.random(N_PATIENTS) < PREVALENCE).astype(int)
        score = rng.normal(SEPARATION * y, 1.0)
        prob = stats.norm.cdf(score - CUTOFF)  # monotone in score; >= 0.5 iff score >= CUTOFF
        probs = np.column_stack([1 - prob, prob])
        res = bootstrap_metrics(
            y,
            (prob >= 0.5).astype(int),
            probs,
            n_boot=N_BOOT,
            method=method,
            random_state=seed * 100_000 + i,
            class_names=("neg", "pos"),
        )
        sens, auc = res["sensitivity:pos"], res["auc:pos"]
        hits["sensitivity_bootstrap"] += sens.low <= true_sens <= sens.high
        hits["auc_bootstrap"] += auc.low <= true_auc <= auc.high
        w = wilson_interval(int(np.sum((prob >= 0.5) & (y == 1))), int(y.sum()))
        hits["sensitivity_wilson"] += w.low <= true_sens <= w.high
        d = delong_interval(y, score)
        hits["auc_delong"] += d.low <= true_auc <= d.high
    return {k: v / N_DATASETS for k, v in hits.items()}


@pytest.mark.slow
def test_bootstrap_intervals_cover_true_values() -> None:
    coverage = simulate_coverage("percentile")
    print(coverage)
    lo, hi = COVERAGE_RANGE
    assert lo <= coverage["sensitivity_bootstrap"] <= hi
    assert lo <= coverage["auc_bootstrap"] <= hi
