"""Readers: a path (DICOM folder/zip/file, NIfTI, PNG/JPG slices) -> `Volume`; cohorts -> records.

Nothing after this layer opens image files.
"""

from covidct.io.volume import HOUNSFIELD_AIR, Volume, VolumeMetadata

__all__ = ["HOUNSFIELD_AIR", "Volume", "VolumeMetadata"]
