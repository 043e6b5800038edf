"""DICOM series reader: a folder (recursive), a .zip or one file -> `Volume` in HU.

A small package, one module per concern:

- `headers`: the header pass (``stop_before_pixels``): every header value read and validated once
  (`read_header`, `SliceHeader`, `scan_headers`);
- `archive`: zip safety (`extract_zip_safely`: members checked against the budgets before extraction);
- `series`: series choice (`group_series`, `choose_series`, `SeriesInfo`, modality and size checks);
- `ordering`: slice order superior -> inferior along the normal, spacing, duplicates, gaps, tilt
  (`order_slices` -> `SeriesGeometry`; distinct from `covidct.preprocessing.geometry.Geometry`, the
  volume -> model-space record);
- `decoding`: the pixel pass in a thread pool, stored values -> HU, padding -> air (`decode_slices`);
- `reader`: `read_dicom` and `list_dicom_series`, which chain the above.

Every name the former single module ``covidct/io/dicom.py`` defined stays importable from here.
"""

from __future__ import annotations

from covidct.io.dicom.archive import (  # noqa: F401
    COPY_CHUNK,
    MAX_SHOWN_NAME,
    ZIP_ENCRYPTED_FLAG,
    ZIP_METHODS,
    _check_zip_members,
    _copy_member,
    _member_display_name,
    _zip_refusal,
    extract_zip_safely,
)
from covidct.io.dicom.decoding import (  # noqa: F401
    DECODER_PACKAGES,
    DEFAULT_WORKERS,
    JPEG_LOSSLESS_SYNTAXES,
    OUT_OF_FIELD_HU,
    PADDING_FILL_HU,
    DecodedSeries,
    _fast_codec,
    _is_decoder_failure,
    _read_with_pixels,
    _stored_values,
    check_decoder,
    decode_slice,
    decode_slices,
    decoder_available,
)
from covidct.io.dicom.headers import (  # noqa: F401
    DEFLATED_SYNTAX,
    INFLATE_CHUNK,
    MAX_DIMENSION,
    MAX_POSITION_MM,
    MAX_SPACING_MM,
    SHOWN_VALUE_CHARS,
    TEXT_TAGS,
    HeaderScan,
    SliceHeader,
    _candidate_files,
    _ClampedReader,
    _display_name,
    _image_type,
    _meta_end,
    _raw_value,
    _shown,
    _slice_header,
    check_inflated_size,
    header_int,
    header_number,
    header_numbers,
    header_text,
    looks_like_dicom,
    read_header,
    scan_headers,
)
from covidct.io.dicom.ordering import (  # noqa: F401
    DUPLICATE_TOL_MM,
    GAP_FACTOR,
    TILT_TOL_DEG,
    UNEQUAL_SPACING_TOL,
    SeriesGeometry,
    _drop_duplicates,
    _fallback_thickness,
    _spacing_warnings,
    _tilt_warnings,
    order_slices,
)
from covidct.io.dicom.reader import (  # noqa: F401
    _collect,
    _metadata,
    check_series_budget,
    list_dicom_series,
    read_dicom,
)
from covidct.io.dicom.series import (  # noqa: F401
    SeriesInfo,
    _series_rank,
    check_dimensions,
    check_modality,
    choose_series,
    describe_series,
    group_series,
    orientation_name,
)

Geometry = SeriesGeometry
"""Former name of `SeriesGeometry` (kept importable; new code uses `SeriesGeometry`)."""

__all__ = [
    "check_decoder",
    "check_dimensions",
    "check_inflated_size",
    "check_modality",
    "check_series_budget",
    "choose_series",
    "COPY_CHUNK",
    "decode_slice",
    "decode_slices",
    "DecodedSeries",
    "decoder_available",
    "DECODER_PACKAGES",
    "DEFAULT_WORKERS",
    "DEFLATED_SYNTAX",
    "describe_series",
    "DUPLICATE_TOL_MM",
    "extract_zip_safely",
    "GAP_FACTOR",
    "group_series",
    "header_int",
    "header_number",
    "header_numbers",
    "header_text",
    "HeaderScan",
    "INFLATE_CHUNK",
    "JPEG_LOSSLESS_SYNTAXES",
    "list_dicom_series",
    "looks_like_dicom",
    "MAX_DIMENSION",
    "MAX_POSITION_MM",
    "MAX_SHOWN_NAME",
    "MAX_SPACING_MM",
    "order_slices",
    "orientation_name",
    "OUT_OF_FIELD_HU",
    "PADDING_FILL_HU",
    "read_dicom",
    "read_header",
    "scan_headers",
    "SeriesGeometry",
    "SeriesInfo",
    "SHOWN_VALUE_CHARS",
    "SliceHeader",
    "TEXT_TAGS",
    "TILT_TOL_DEG",
    "UNEQUAL_SPACING_TOL",
    "ZIP_ENCRYPTED_FLAG",
    "ZIP_METHODS",
]
