"""COVIDx CT file names -> (source, patient id, slice index), and the dataset's `metadata.csv`.

COVIDx CT names every slice after the scan it came from; each data source has its own scheme
(see the COVIDNet-CT `dataset_construction/` code). `COVIDX_RULES` is the one table of those
schemes, in the order they are tried; the patient id each rule extracts is exactly the
``patient id`` column of the dataset's ``metadata.csv``, so slices join their patient's sex,
age, country and verification.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from covidct.errors import CohortError, NoDataError

METADATA_FILE_NAME = "metadata.csv"
"""Name of the COVIDx CT patient table, looked for next to a split file."""
METADATA_ID_COLUMN = "patient id"
MAX_EXAMPLES = 5
"""File names / ids quoted in a warning or summary."""


@dataclass(frozen=True)
class NameRule:
    """One data source's file-name scheme.

    Attributes:
        source: the source as ``metadata.csv`` names it (``CNCB``, ``COVID-CT-MD``, ...).
        pattern: full match on the file stem, with groups ``patient`` and ``slice``.
        example: a real file name of this source (shown in docs and tested).
        example_patient: the patient id `example` must give.
    """

    source: str
    pattern: re.Pattern[str]
    example: str
    example_patient: str


def _rule(source: str, pattern: str, example: str, example_patient: str) -> NameRule:
    return NameRule(source, re.compile(pattern), example, example_patient)


COVIDX_RULES: tuple[NameRule, ...] = (
    # CNCB: <class>_<patient>_<scan>_<slice>
    _rule(
        "CNCB", r"(?P<patient>(?:NCP|CP|Normal)_\d+)_\d+_(?P<slice>\d+)", "NCP_341_1834_0022.png", "NCP_341"
    ),
    # COVID-CT-MD: COVIDCTMD-<P|cap|normal><n>-IM<slice>
    _rule(
        "COVID-CT-MD",
        r"(?P<patient>COVIDCTMD-(?:P|cap|normal)\d+)-IM(?P<slice>\d+)",
        "COVIDCTMD-P002-IM0025.png",
        "COVIDCTMD-P002",
    ),
    # LIDC-IDRI: LIDC-IDRI-<n>-<series uid>-<slice>
    _rule(
        "LIDC-IDRI",
        r"(?P<patient>LIDC-IDRI-\d+)-[\d.]+-(?P<slice>\d+)",
        "LIDC-IDRI-0234-1.3.6.1.4.1.14519.5.2.1.6279.6001.1-0019.png",
        "LIDC-IDRI-0234",
    ),
    # TCIA CT Images in COVID-19 (via COVID-19-20): volume-covid19-A-<n>[_<k>]_ct-<slice>
    _rule(
        "TCIA",
        r"(?P<patient>volume-covid19-A-\d+(?:_\d+)?)_ct-(?P<slice>\d+)",
        "volume-covid19-A-0383_1_ct-0042.png",
        "volume-covid19-A-0383_1",
    ),
    # COVID-19-CT-Seg (Zenodo 3757476): coronacases_<n>-<slice>, radiopaedia_<a>_<b>_<k>-<slice>
    _rule(
        "COVID-19-CT-Seg",
        r"(?P<patient>coronacases_\d+)-(?P<slice>\d+)",
        "coronacases_006-0050.png",
        "coronacases_006",
    ),
    _rule(
        "COVID-19-CT-Seg",
        r"(?P<patient>radiopaedia_\d+_\d+)_\d+-(?P<slice>\d+)",
        "radiopaedia_29_86491_1-0014.png",
        "radiopaedia_29_86491",
    ),
    # COVID-CTset: <normal<k>|normalcd<k>|cdnormal<k>|<k>covid>_patient<n>_SR_<series>_IM<slice>
    _rule(
        "COVID-CTset",
        r"(?:normal\d+|normalcd\d+|cdnormal\d+|\d+covid)_(?P<patient>patient\d+)_SR_\d+_IM(?P<slice>\d+)",
        "137covid_patient76_SR_3_IM00012.png",
        "patient76",
    ),
    # radiopaedia.org: radiopaedia-<rID>-<studyID>-<stack>-<slice>
    _rule(
        "radiopaedia.org",
        r"(?P<patient>radiopaedia-\d+)-\d+-\d+-(?P<slice>\d+)",
        "radiopaedia-11516-8837-0-0031.png",
        "radiopaedia-11516",
    ),
    # iCTCF: HUST-Patient<n>-<slice>
    _rule(
        "iCTCF", r"(?P<patient>HUST-Patient\d+)-(?P<slice>\d+)", "HUST-Patient10-0042.png", "HUST-Patient10"
    ),
    # STOIC: STOIC-<n>-<slice>
    _rule("STOIC", r"(?P<patient>STOIC-\d+)-(?P<slice>\d+)", "STOIC-1002-0113.png", "STOIC-1002"),
    # MosMedData: study_<n>-<slice>
    _rule("MosMedData", r"(?P<patient>study_\d+)-(?P<slice>\d+)", "study_0255-0021.png", "study_0255"),
    # Stony Brook (COVID-19-NY-SBU): <A-number>-<study description>-<series>-<slice>
    _rule(
        "Stony Brook",
        r"(?P<patient>A\d+)-.+-\d+(?:\.\d+)?-(?P<slice>\d+)",
        "A002304-CT-CHEST-WITHOUT-CONTRAST-4-0077.png",
        "A002304",
    ),
)
"""Ordered (source, pattern) table: the first rule whose pattern fully matches the file stem wins."""

_FALLBACK_SLICE = re.compile(r"(?P<patient>.+?)[_-](?P<slice>\d+)")


@dataclass(frozen=True)
class CovidxName:
    """What a COVIDx CT file name says: source (None if no rule fits), patient id, slice index."""

    source: str | None
    patient_id: str
    slice_index: int | None


def file_stem(file_name: str) -> str:
    """File name without folders and image extension (``a/NCP_1_2_0003.png`` -> ``NCP_1_2_0003``)."""
    return os.path.splitext(os.path.basename(file_name))[0]


def parse_covidx_name(file_name: str) -> CovidxName | None:
    """Source, patient id and slice index of a COVIDx CT file name; None when no rule fits."""
    stem = file_stem(file_name)
    for rule in COVIDX_RULES:
        match = rule.pattern.fullmatch(stem)
        if match:
            return CovidxName(rule.source, match["patient"], int(match["slice"]))
    return None


def fallback_name(file_name: str) -> CovidxName:
    """For a name no rule fits: patient = stem up to its trailing ``_<n>``/``-<n>`` slice number.

    (covidct's own `covidct slices` writes ``<patient>_<slice>.png``.) Source is None.
    """
    stem = file_stem(file_name)
    match = _FALLBACK_SLICE.fullmatch(stem)
    if match:
        return CovidxName(None, match["patient"], int(match["slice"]))
    return CovidxName(None, stem, None)


def unmatched_names_message(names: list[str], total: int, origin: str) -> str:
    """The one warning for file names that fit no rule: how many, examples, what was done, what to do."""
    shown = ", ".join(f"{n} -> {fallback_name(n).patient_id}" for n in names[:MAX_EXAMPLES])
    return (
        f"{origin}: {len(names)} of {total} file names fit no known COVIDx CT source pattern "
        f"(e.g. {shown}); their patient id is the name up to the trailing slice number and their source is "
        "unknown. If they come from a new source, add a rule to covidct.io.covidx.COVIDX_RULES, or give a "
        "manifest CSV with a patient_id column."
    )


def read_covidx_metadata(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Read COVIDx CT ``metadata.csv`` -> {patient id: {column: value}}.

    Column names are lower-case with spaces as underscores (``verified finding`` ->
    ``verified_finding``); empty cells are dropped.

    Raises:
        NoDataError: the file does not exist. CohortError: no ``patient id`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise NoDataError(f"COVIDx metadata {path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if METADATA_ID_COLUMN not in columns:
            raise CohortError(
                f"COVIDx metadata {path}: no '{METADATA_ID_COLUMN}' column (found {columns}); "
                "give the dataset's own metadata.csv."
            )
        table: dict[str, dict[str, str]] = {}
        for row in reader:
            values = {_column_key(k): (v or "").strip() for k, v in row.items() if k}
            pid = values.pop("patient_id", "")
            if pid:
                table[pid] = {k: v for k, v in values.items() if v}
    return table


def _column_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def metadata_next_to(split_file: Path) -> Path | None:
    """The ``metadata.csv`` beside a split file, or None."""
    candidate = split_file.parent / METADATA_FILE_NAME
    return candidate if candidate.is_file() else None
