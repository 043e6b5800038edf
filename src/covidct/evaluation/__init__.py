"""Evaluation: metrics, patient-level bootstrap intervals, comparisons, reader studies, reports.

Names are imported from their modules on first use (PEP 562), so ``covidct.evaluation.fusion`` and
the other light modules the service needs do not pull in scipy.stats; plots load matplotlib on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # compare
    "McNemarResult": "compare",
    "mcnemar_test": "compare",
    "paired_bootstrap": "compare",
    # intervals
    "Interval": "intervals",
    "bootstrap_indices": "intervals",
    "bootstrap_metrics": "intervals",
    "delong_covariance": "intervals",
    "delong_interval": "intervals",
    "delong_test": "intervals",
    "wilson_interval": "intervals",
    # metrics
    "UndefinedMetricWarning": "metrics",
    "accuracy_score": "metrics",
    "binary_auc": "metrics",
    "brier_score": "metrics",
    "calibration_curve": "metrics",
    "cohen_kappa_score": "metrics",
    "confusion_matrix": "metrics",
    "expected_calibration_error": "metrics",
    "f1_score": "metrics",
    "multiclass_brier_score": "metrics",
    "npv_score": "metrics",
    "ppv_score": "metrics",
    "precision_recall_curve": "metrics",
    "roc_auc_ovr": "metrics",
    "roc_curve": "metrics",
    "sensitivity_score": "metrics",
    "specificity_score": "metrics",
    # operating_point
    "OperatingPoint": "operating_point",
    "apply_threshold": "operating_point",
    "choose_threshold": "operating_point",
    # predictions
    "PredictionTable": "predictions",
    "PredictionsFormatError": "predictions",
    "aggregate_patients": "predictions",
    "read_predictions": "predictions",
    "write_predictions": "predictions",
    # readers
    "ReadsFormatError": "readers",
    "fleiss_kappa": "readers",
    "kappa_category": "readers",
    "read_reads": "readers",
    "reader_study": "readers",
    # report
    "EvaluationResult": "report",
    "evaluate_predictions": "report",
}
"""Public name -> the module of this package that defines it."""

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from covidct.evaluation.compare import McNemarResult, mcnemar_test, paired_bootstrap  # noqa: F401
    from covidct.evaluation.intervals import (  # noqa: F401
        Interval,
        bootstrap_indices,
        bootstrap_metrics,
        delong_covariance,
        delong_interval,
        delong_test,
        wilson_interval,
    )
    from covidct.evaluation.metrics import (  # noqa: F401
        UndefinedMetricWarning,
        accuracy_score,
        binary_auc,
        brier_score,
        calibration_curve,
        cohen_kappa_score,
        confusion_matrix,
        expected_calibration_error,
        f1_score,
        multiclass_brier_score,
        npv_score,
        ppv_score,
        precision_recall_curve,
        roc_auc_ovr,
        roc_curve,
        sensitivity_score,
        specificity_score,
    )
    from covidct.evaluation.operating_point import OperatingPoint, apply_threshold, choose_threshold  # noqa: F401
    from covidct.evaluation.predictions import (  # noqa: F401
        PredictionsFormatError,
        PredictionTable,
        aggregate_patients,
        read_predictions,
        write_predictions,
    )
    from covidct.evaluation.readers import (  # noqa: F401
        ReadsFormatError,
        fleiss_kappa,
        kappa_category,
        read_reads,
        reader_study,
    )
    from covidct.evaluation.report import EvaluationResult, evaluate_predictions  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
