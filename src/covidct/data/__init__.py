"""Multi-source cohorts: every real source under one data root -> one manifest CSV.

Sits between preprocessing and training: it reads through `covidct.io` and selects slices with a
preprocessing-level lung measure; training reads the manifest it writes like any other.
"""

from covidct.data.cohort_builder import (
    COHORT_LABELS,
    SOURCES,
    CohortRow,
    build_cohort,
    lung_fraction,
    write_cohort,
)

__all__ = ["COHORT_LABELS", "SOURCES", "CohortRow", "build_cohort", "lung_fraction", "write_cohort"]
