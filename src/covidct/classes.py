"""The class table: one place that maps every dataset's class names to covidct's classes.

covidct's canonical 3-class order follows COVIDx CT: 0 Normal, 1 Pneumonia (CP/CAP), 2 COVID-19.
"""

from __future__ import annotations

from covidct.errors import UnknownClassError

NORMAL = "Normal"
PNEUMONIA = "Pneumonia"
COVID = "COVID-19"
NON_COVID = "Non-COVID"

CLASSES_3 = (NORMAL, PNEUMONIA, COVID)
"""COVIDx CT order: index 0 Normal, 1 Pneumonia, 2 COVID-19."""

CLASSES_BINARY = (NON_COVID, COVID)
"""Binary order: index 0 non-COVID, 1 COVID-19 (UCSD COVID-CT, Liu et al.)."""

_ALIASES: dict[str, str] = {
    # Normal / control
    "normal": NORMAL, "0": NORMAL, "control": NORMAL, "healthy": NORMAL, "negative": NORMAL,
    "lidc": NORMAL, "lidc-idri": NORMAL,
    # Pneumonia
    "pneumonia": PNEUMONIA, "1": PNEUMONIA, "cp": PNEUMONIA, "cap": PNEUMONIA,
    "common pneumonia": PNEUMONIA, "community acquired pneumonia": PNEUMONIA, "other pneumonia": PNEUMONIA,
    # COVID-19
    "covid-19": COVID, "covid19": COVID, "covid": COVID, "2": COVID, "ncp": COVID,
    "ct_covid": COVID, "positive": COVID, "sars-cov-2": COVID,
    # binary negative
    "non-covid": NON_COVID, "noncovid": NON_COVID, "ct_noncovid": NON_COVID, "non_covid": NON_COVID,
}


def canonical_class(name: str | int) -> str:
    """Map a dataset's class name (or COVIDx index) to covidct's canonical class name.

    >>> canonical_class("CAP")
    'Pneumonia'
    """
    key = str(name).strip().lower().replace("_", "-") if not str(name).isdigit() else str(name)
    key_alt = str(name).strip().lower()
    for k in (key, key_alt):
        if k in _ALIASES:
            return _ALIASES[k]
    raise UnknownClassError(
        f"Unknown class name {name!r}. Known names: Normal (normal, control, 0), "
        f"Pneumonia (CP, CAP, pneumonia, 1), COVID-19 (COVID, NCP, covid19, 2), Non-COVID (CT_NonCOVID). "
        "Rename the class in your manifest or folder, or add an alias in covidct/classes.py."
    )


def class_index(name: str | int, classes: tuple[str, ...] = CLASSES_3) -> int:
    """Index of a class name within ``classes`` (after canonicalisation)."""
    canon = canonical_class(name)
    if canon == NORMAL and NORMAL not in classes and NON_COVID in classes:
        canon = NON_COVID
    if canon == PNEUMONIA and PNEUMONIA not in classes and NON_COVID in classes:
        canon = NON_COVID
    if canon not in classes:
        raise UnknownClassError(f"Class {name!r} ({canon}) is not one of this task's classes {classes}.")
    return classes.index(canon)
