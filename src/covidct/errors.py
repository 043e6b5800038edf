"""One exception hierarchy for covidct.

Every message says what was given, what was expected, and what to do. The CLI
prints the message (no traceback) and exits non-zero; the service maps these
errors to 4xx answers.
"""

from __future__ import annotations


class CovidCTError(Exception):
    """Base class of every error covidct raises on purpose."""

    exit_code = 2


# ---- io -------------------------------------------------------------------
class InputError(CovidCTError):
    """A path or file given by the user cannot be used."""


class NoDataError(InputError):
    """The path holds nothing covidct can read (empty folder, no DICOM, no images)."""


class CorruptFileError(InputError):
    """A file is truncated or not a valid DICOM / NIfTI / image file."""


class MissingPixelDataError(InputError):
    """A DICOM file has no pixel data (a report, a presentation state, ...)."""


class ModalityError(InputError):
    """The data is not CT (e.g. MR, CR) and ``allow_modality`` was not given."""


class SeriesSelectionError(InputError):
    """No series matches, or the requested SeriesInstanceUID is not there."""


class InconsistentSeriesError(InputError):
    """Slices of one series cannot be stacked (mixed rows/columns, ...)."""


class MissingDecoderError(InputError):
    """A compressed transfer syntax needs a decoder package that is not installed."""


class InvalidHeaderError(CorruptFileError):
    """A header value (DICOM tag, NIfTI field) is missing, not a number, non-finite or out of range."""


class UnsafeArchiveError(CorruptFileError):
    """A zip archive is hostile or unusable: members outside the folder, encrypted, a zip bomb."""


class ResourceLimitError(InputError):
    """Reading the input would need more memory or disk than the configured budget (see io/limits.py)."""


class SpecialFileError(InputError):
    """The path is a FIFO, device or socket; covidct reads only regular files and folders."""


class MaskGeometryError(InputError):
    """Masks cannot be written exactly on the source series (irregular slices, missing instances)."""


class CohortError(InputError):
    """A manifest, split file or folder layout is malformed (bad columns, unknown class, leakage)."""


class UnknownClassError(CohortError):
    """A class name is not in the class table."""


# ---- configuration / models ----------------------------------------------
class ConfigError(CovidCTError):
    """A configuration value, recipe or option is invalid."""


class UnknownNameError(ConfigError):
    """A name (model, recipe, method) is not registered; the message lists valid names."""


class ShapeError(CovidCTError):
    """A tensor has the wrong number of dimensions or channels for a model or transform."""


class CheckpointError(CovidCTError):
    """A checkpoint is corrupt, from another model, or incompatible."""


class WeightsError(CheckpointError):
    """A user-supplied weights file is missing or does not match the model."""


# ---- training / evaluation / explain --------------------------------------
class TrainingError(CovidCTError):
    """Training stopped: NaN loss, out of memory, interrupted."""


class DataLeakageError(CohortError):
    """One patient appears in two splits."""


class EvaluationError(CovidCTError):
    """Predictions cannot be evaluated (missing columns, NaN probabilities, ...)."""


class ExplainError(CovidCTError):
    """An explanation method does not apply to a model."""


class LungNotFoundError(ExplainError):
    """No lung (or no body tissue to calibrate against) found in a slice."""


# ---- service --------------------------------------------------------------
class ServiceError(CovidCTError):
    """A request to the service cannot be served."""


class UploadError(ServiceError):
    """An upload is too large, malformed, or hostile (zip-slip, zip bomb)."""


def closest_names(name: str, valid: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Return up to ``n`` valid names closest to ``name`` (for 'did you mean ...?')."""
    import difflib

    return difflib.get_close_matches(name, list(valid), n=n, cutoff=0.4)


def unknown_name_message(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> str:
    """Message for an unknown registry name, listing the valid names and a suggestion."""
    close = closest_names(name, valid)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Valid {kind} names: {', '.join(sorted(valid))}."
