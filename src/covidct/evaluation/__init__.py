"""Evaluation: metrics, patient-level bootstrap intervals, comparisons, reader studies, reports.

Light imports only (numpy/scipy); plots load matplotlib on first use.
"""

from covidct.evaluation.compare import McNemarResult, mcnemar_test, paired_bootstrap
from covidct.evaluation.intervals import (
    Interval,
    bootstrap_indices,
    bootstrap_metrics,
    delong_covariance,
    delong_interval,
    delong_test,
    wilson_interval,
)
from covidct.evaluation.metrics import (
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
from covidct.evaluation.operating_point import OperatingPoint, apply_threshold, choose_threshold
from covidct.evaluation.predictions import (
    PredictionsFormatError,
    PredictionTable,
    aggregate_patients,
    read_predictions,
    write_predictions,
)
from covidct.evaluation.readers import (
    ReadsFormatError,
    fleiss_kappa,
    kappa_category,
    read_reads,
    reader_study,
)
from covidct.evaluation.report import EvaluationResult, evaluate_predictions

__all__ = [
    "EvaluationResult",
    "Interval",
    "McNemarResult",
    "OperatingPoint",
    "PredictionTable",
    "PredictionsFormatError",
    "ReadsFormatError",
    "UndefinedMetricWarning",
    "accuracy_score",
    "aggregate_patients",
    "apply_threshold",
    "binary_auc",
    "bootstrap_indices",
    "bootstrap_metrics",
    "brier_score",
    "calibration_curve",
    "choose_threshold",
    "cohen_kappa_score",
    "confusion_matrix",
    "delong_covariance",
    "delong_interval",
    "delong_test",
    "evaluate_predictions",
    "expected_calibration_error",
    "f1_score",
    "fleiss_kappa",
    "kappa_category",
    "mcnemar_test",
    "multiclass_brier_score",
    "npv_score",
    "paired_bootstrap",
    "ppv_score",
    "precision_recall_curve",
    "read_predictions",
    "read_reads",
    "reader_study",
    "roc_auc_ovr",
    "roc_curve",
    "sensitivity_score",
    "specificity_score",
    "wilson_interval",
    "write_predictions",
]
