"""Cohorts: manifest CSVs, COVIDx CT split files and class folders -> `CaseRecord`s.

Every reader returns records whose ``label`` is a canonical class name (covidct.classes).
"""

from __future__ import annotations

import contextlib
import csv
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from covidct.classes import canonical_class
from covidct.errors import (
    CohortError,
    CorruptFileError,
    DataLeakageError,
    NoDataError,
    ResourceLimitError,
    UnknownClassError,
)
from covidct.io.covidx import (
    CovidxName,
    fallback_name,
    file_stem,
    metadata_next_to,
    parse_covidx_name,
    read_covidx_metadata,
    unmatched_names_message,
)
from covidct.io.images import is_image, natural_key
from covidct.io.limits import check_not_special, is_regular_file

MANIFEST_REQUIRED = ("path", "label", "patient_id")
MANIFEST_OPTIONAL = ("split", "source", "case_id", "slice_index")
COVIDX_FIELDS = 6
"""`<file> <class> <xmin> <ymin> <xmax> <ymax>`."""
CLASS_FOLDERS = ("CT_COVID", "CT_NonCOVID", "COVID-19", "CAP", "Normal", "Pneumonia", "COVID", "NonCOVID")
UCSD_FOLDERS = ("CT_COVID", "CT_NonCOVID")
UCSD_LEAKAGE_NOTE = (
    "UCSD COVID-CT has no patient ids: patient_id is the file stem, so one patient's slices can land "
    "in two splits (patient leakage). Report this caveat with any number measured on it."
)


@dataclass
class CaseRecord:
    """One case of a cohort: a scan (DICOM folder, NIfTI) or one 2D slice image.

    Attributes:
        case_id: unique id within the cohort.
        path: file or folder to read with `read_volume` / `read_image`.
        label: canonical class name (covidct.classes).
        patient_id: patient the case belongs to (splits must not share patients).
        split: 'train', 'val', 'test' or None.
        source: data source ('CNCB', 'COVID-CT-MD', 'UCSD', ...) or None.
        box: (xmin, ymin, xmax, ymax) in image pixels, xmax/ymax exclusive (COVIDx), or None.
        slice_index: index of the slice within its scan when the case is one slice, or None.
        meta: the patient's row of a cohort metadata table (COVIDx ``metadata.csv``: sex, age,
            country, verified_finding, ...), or None.
    """

    case_id: str
    path: Path
    label: str
    patient_id: str
    split: str | None = None
    source: str | None = None
    box: tuple[int, int, int, int] | None = None
    slice_index: int | None = None
    meta: dict[str, str] | None = None


# ---------------------------------------------------------------- text-file errors
@contextlib.contextmanager
def _text_errors(path: Path, what: str) -> Iterator[None]:
    """Map decoding and CSV-syntax errors of a cohort text file to CohortError."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise CohortError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8."
        ) from None
    except csv.Error as exc:
        raise CohortError(f"{what} {path} is not a readable CSV ({exc}); fix or re-export it.") from None


# ---------------------------------------------------------------- manifest CSV
def _label(value: str, where: str) -> str:
    try:
        return canonical_class(value)
    except UnknownClassError as exc:
        raise UnknownClassError(f"{where}: {exc}") from None


def read_manifest(path: str | os.PathLike[str]) -> list[CaseRecord]:
    """Read a manifest CSV with columns ``path,label,patient_id[,split][,source]``.

    Relative paths are resolved against the CSV's folder.

    Raises:
        CohortError: missing columns or empty cells (with line numbers). UnknownClassError: unknown label.
    """
    path = Path(path)
    if not path.is_file():
        raise NoDataError(f"Manifest {path} does not exist.")
    with _text_errors(path, "Manifest"), open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in MANIFEST_REQUIRED if c not in columns]
        if missing:
            raise CohortError(
                f"Manifest {path} line 1: missing column(s) {', '.join(missing)}; found {columns}. "
                f"Required: {', '.join(MANIFEST_REQUIRED)}; optional: {', '.join(MANIFEST_OPTIONAL)}."
            )
        records = [_manifest_row(row, path, reader.line_num) for row in reader]
    if not records:
        raise NoDataError(f"Manifest {path} has a header but no rows.")
    return records


def _manifest_row(row: dict[str | None, str | list[str] | None], manifest: Path, line: int) -> CaseRecord:
    if None in row:  # csv.DictReader puts fields beyond the header under the key None
        extra = row[None]
        raise CohortError(
            f"Manifest {manifest} line {line}: {len(extra or [])} more field(s) than the header "
            f"({extra!r:.80}); quote cells that contain commas or remove the extra fields."
        )
    row = {(k or "").strip(): str(v or "").strip() for k, v in row.items()}
    empty = [c for c in MANIFEST_REQUIRED if not row.get(c)]
    if empty:
        raise CohortError(
            f"Manifest {manifest} line {line}: empty {', '.join(empty)}; fill every required cell."
        )
    case_path = Path(row["path"])
    if not case_path.is_absolute():
        case_path = manifest.parent / case_path
    name = case_path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else case_path.stem
    return CaseRecord(
        case_id=row.get("case_id") or f"{row['patient_id']}/{stem}",
        path=case_path,
        label=_label(row["label"], f"Manifest {manifest} line {line}"),
        patient_id=row["patient_id"],
        split=row.get("split") or None,
        source=row.get("source") or None,
        slice_index=_slice_index(row.get("slice_index"), f"Manifest {manifest} line {line}"),
    )


def _slice_index(value: str | None, where: str) -> int | None:
    """Optional ``slice_index`` cell: a slice of the case's series (0 = most superior), or empty."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise CohortError(
            f"{where}: slice_index {value!r} is not a whole number >= 0; leave it empty for image files."
        )
    return int(value)


# ---------------------------------------------------------------- COVIDx split
def covidx_source(file_name: str) -> str | None:
    """Data source of a COVIDx CT file name (``NCP_...`` -> ``CNCB``); None if no rule fits."""
    parsed = parse_covidx_name(file_name)
    return parsed.source if parsed else None


def covidx_patient_id(file_name: str) -> str:
    """Patient id of a COVIDx CT file name, as in the dataset's ``metadata.csv`` (see covidct.io.covidx)."""
    return (parse_covidx_name(file_name) or fallback_name(file_name)).patient_id


def read_covidx_split(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    split: str | None = None,
    metadata: str | os.PathLike[str] | None = None,
) -> list[CaseRecord]:
    """Read a COVIDx CT split file (``<file> <class 0/1/2> <xmin> <ymin> <xmax> <ymax>`` per line).

    Patient id and source come from the file name (`covidct.io.covidx.COVIDX_RULES`); names that
    fit no rule are reported in one warning. Each record's ``meta`` is its patient's row of the
    dataset's ``metadata.csv`` (sex, age, country, verified_finding, ...).

    Args:
        split: split name for the records; by default guessed from the file name (train/val/test).
        metadata: COVIDx ``metadata.csv``; by default the one next to the split file, if any.

    Raises:
        CohortError: a malformed line (with its number), an empty box. UnknownClassError: a class not 0/1/2.
    """
    path = Path(path)
    if not path.is_file():
        raise NoDataError(f"COVIDx split file {path} does not exist.")
    split = split or _guess_split(path.name)
    root = Path(image_root)
    records = []
    unmatched: list[str] = []
    with _text_errors(path, "COVIDx split file"), open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                records.append(_covidx_line(line, line_no, path, root, split, unmatched))
    if not records:
        raise NoDataError(f"COVIDx split file {path} is empty.")
    if unmatched:
        message = unmatched_names_message(unmatched, len(records), f"COVIDx split {path}")
        warnings.warn(message, UserWarning, stacklevel=2)
    metadata_path = Path(metadata) if metadata is not None else metadata_next_to(path)
    if metadata_path is not None:
        _join_covidx_metadata(records, metadata_path)
    return records


def _join_covidx_metadata(records: list[CaseRecord], metadata_path: Path) -> None:
    """Attach each record's patient row of ``metadata.csv``; one warning for patients not in it."""
    with _text_errors(metadata_path, "COVIDx metadata"):
        table = read_covidx_metadata(metadata_path)
    missing: dict[str, None] = {}
    for record in records:
        record.meta = table.get(record.patient_id)
        if record.meta is None:
            missing[record.patient_id] = None
    if missing:
        shown = ", ".join(list(missing)[:5])
        warnings.warn(
            f"{len(missing)} patient id(s) of the split are not in {metadata_path} (e.g. {shown}); their "
            "records have no metadata. Check that the metadata file belongs to this COVIDx CT release.",
            UserWarning,
            stacklevel=3,
        )


def _guess_split(name: str) -> str | None:
    lowered = name.lower()
    for split in ("train", "val", "test"):
        if split in lowered:
            return split
    return None


def _covidx_line(
    line: str, line_no: int, path: Path, root: Path, split: str | None, unmatched: list[str]
) -> CaseRecord:
    fields = line.split()
    where = f"COVIDx split {path} line {line_no}"
    if len(fields) != COVIDX_FIELDS:
        raise CohortError(
            f"{where}: expected 6 fields '<file> <class> <xmin> <ymin> <xmax> <ymax>', "
            f"got {len(fields)}: {line.strip()!r}"
        )
    file_name, cls = fields[0], fields[1]
    if cls not in ("0", "1", "2"):
        raise UnknownClassError(f"{where}: class {cls!r} is not 0 (Normal), 1 (Pneumonia) or 2 (COVID-19).")
    try:
        xmin, ymin, xmax, ymax = (int(float(v)) for v in fields[2:])
    except (ValueError, OverflowError):  # 'abc', 'nan' / 'inf'
        raise CohortError(f"{where}: box {fields[2:]} is not four finite integers.") from None
    if xmax <= xmin or ymax <= ymin:
        raise CohortError(f"{where}: empty box ({xmin}, {ymin}, {xmax}, {ymax}); xmax/ymax are exclusive.")
    name: CovidxName | None = parse_covidx_name(file_name)
    if name is None:
        unmatched.append(file_name)
        name = fallback_name(file_name)
    return CaseRecord(
        case_id=file_stem(file_name),
        path=root / file_name,
        label=canonical_class(cls),
        patient_id=name.patient_id,
        split=split,
        source=name.source,
        box=(xmin, ymin, xmax, ymax),
        slice_index=name.slice_index,
    )


# ---------------------------------------------------------------- class folders
def _holds_dicom(folder: Path) -> bool:
    from covidct.io.dicom import read_header

    for p in folder.rglob("*"):
        if is_regular_file(p) and not is_image(p):
            try:
                if read_header(p) is not None:
                    return True
            except (CorruptFileError, ResourceLimitError):  # a damaged DICOM file still means 'DICOM here'
                return True
    return False


def read_class_folders(root: str | os.PathLike[str]) -> list[CaseRecord]:
    """Read a folder with one subfolder per class (CT_COVID/ + CT_NonCOVID/, or COVID-19/ CAP/ Normal/).

    Below a class folder, each subfolder holding DICOM is one case (patient id = the folder
    name); otherwise each image file is one case (patient id = file stem; the
    UCSD layout has no patient ids, see `UCSD_LEAKAGE_NOTE`).

    Raises:
        NoDataError: no class folders or no cases. UnknownClassError: a class folder name not known.
    """
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise NoDataError(
            f"{root} has no class subfolders; expected e.g. CT_COVID/ and CT_NonCOVID/, "
            "or COVID-19/ CAP/ Normal/."
        )
    source = "UCSD" if {d.name for d in class_dirs} >= set(UCSD_FOLDERS) else root.name
    if source == "UCSD":
        warnings.warn(UCSD_LEAKAGE_NOTE, UserWarning, stacklevel=2)
    records: list[CaseRecord] = []
    for class_dir in class_dirs:
        label = _label(class_dir.name, f"class folder {class_dir}")
        records += _class_cases(class_dir, label, source)
    if not records:
        raise NoDataError(f"No cases (DICOM subfolders or images) under the class folders of {root}.")
    return records


def _class_cases(class_dir: Path, label: str, source: str) -> list[CaseRecord]:
    cases = []
    for sub in sorted((p for p in class_dir.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        if _holds_dicom(sub):
            cases.append(CaseRecord(f"{class_dir.name}/{sub.name}", sub, label, sub.name, source=source))
    for img in sorted(
        (p for p in class_dir.iterdir() if is_regular_file(p) and is_image(p)),
        key=lambda p: natural_key(p.name),
    ):
        cases.append(CaseRecord(f"{class_dir.name}/{img.name}", img, label, img.stem, source=source))
    return cases


# ---------------------------------------------------------------- dispatch + leakage
def read_cohort(
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | None = None,
) -> list[CaseRecord]:
    """Read a cohort from a manifest (.csv), a COVIDx split (.txt) or a class-folder root.

    Args:
        image_root: folder of the COVIDx images (default: the split file's folder).
        metadata: COVIDx ``metadata.csv`` (default: the one next to the split file, if any).
    """
    path = Path(path)
    check_not_special(path)
    if not path.exists():
        raise NoDataError(f"Cohort path {path} does not exist.")
    if path.is_dir():
        return read_class_folders(path)
    if path.suffix.lower() == ".csv":
        return read_manifest(path)
    if path.suffix.lower() == ".txt":
        root = image_root if image_root is not None else path.parent
        return read_covidx_split(path, root, metadata=metadata)
    raise CohortError(
        f"Cannot tell what cohort {path} is: give a manifest .csv (path,label,patient_id[,split][,source]), "
        "a COVIDx split .txt, or a folder with one subfolder per class."
    )


def check_no_patient_leakage(records: list[CaseRecord]) -> None:
    """Raise DataLeakageError when a patient id appears in more than one split.

    Records without a split are ignored.
    """
    splits: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.split is not None:
            splits[r.patient_id].add(r.split)
    leaked = {pid: s for pid, s in splits.items() if len(s) > 1}
    if leaked:
        shown = "; ".join(f"{pid}: {', '.join(sorted(s))}" for pid, s in sorted(leaked.items())[:20])
        more = f" (and {len(leaked) - 20} more)" if len(leaked) > 20 else ""
        raise DataLeakageError(
            f"{len(leaked)} patient(s) appear in more than one split: {shown}{more}. "
            "Split by patient so no patient is in two splits."
        )
