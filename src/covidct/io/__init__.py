"""Readers: a path (DICOM folder/zip/file, NIfTI, PNG/JPG slices) -> `Volume`; cohorts -> records.

Nothing after this layer opens image files.
"""

from covidct.io.cohort import (
    CaseRecord,
    check_no_patient_leakage,
    read_class_folders,
    read_cohort,
    read_covidx_split,
    read_manifest,
)
from covidct.io.dicom import SeriesInfo
from covidct.io.images import read_image
from covidct.io.nifti import read_nifti, write_nifti
from covidct.io.reader import list_series, read_volume
from covidct.io.volume import HOUNSFIELD_AIR, Volume, VolumeMetadata

__all__ = [
    "HOUNSFIELD_AIR",
    "CaseRecord",
    "SeriesInfo",
    "Volume",
    "VolumeMetadata",
    "check_no_patient_leakage",
    "list_series",
    "read_class_folders",
    "read_cohort",
    "read_covidx_split",
    "read_image",
    "read_manifest",
    "read_nifti",
    "read_volume",
    "write_nifti",
]
