"""A decoded slice cache: a COVIDx-style split decoded once into one uint8 memory-mapped file.

Training on COVIDx CT reads ~195 k PNG slices per epoch; decoding them every epoch costs more
CPU than reading bytes. `write_slice_cache` decodes every record's image once; `SliceCache`
maps the pixels read-only (``numpy.memmap``) so epochs, and every DataLoader worker, read them at
memory speed and share the page cache.

On disk, a cache is a folder with two files:

- ``pixels.u8``: all images' grey values (uint8) back to back; images keep their own size
  (COVIDx slices are not all 512 x 512).
- ``index.json``: ``format_version``, the ``source`` it was built from and one entry per image:
  ``file`` (image file name, the lookup key), ``offset`` (bytes), ``shape`` (H, W) and the
  record fields (``case_id``, ``label``, ``patient_id``, ``split``, ``source``, ``box``,
  ``slice_index``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from covidct.errors import CohortError, NoDataError
from covidct.io.cohort import CaseRecord
from covidct.io.images import read_image

CACHE_FORMAT_VERSION = 1
PIXELS_FILE = "pixels.u8"
INDEX_FILE = "index.json"
RECORD_FIELDS = ("case_id", "label", "patient_id", "split", "source", "box", "slice_index")


def is_slice_cache(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding a slice cache (``index.json`` + ``pixels.u8``)."""
    path = Path(path)
    return (path / INDEX_FILE).is_file() and (path / PIXELS_FILE).is_file()


def _entry(record: CaseRecord, offset: int, shape: tuple[int, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": Path(record.path).name, "offset": offset, "shape": list(shape)}
    for name in RECORD_FIELDS:
        value = getattr(record, name)
        entry[name] = list(value) if isinstance(value, tuple) else value
    return entry


def write_slice_cache(
    records: Iterable[CaseRecord],
    out: str | os.PathLike[str],
    *,
    source: str = "",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Decode each record's 2D image (PNG/JPG, through `read_image`) into a cache folder ``out``.

    Args:
        records: slice records (e.g. `read_covidx_split`); each ``path`` is one image file.
        source: where the records came from (stored in the index, e.g. the split file).
        progress: called with the number of images written so far, every image.

    Returns:
        ``out``. The index is written last, so an interrupted run leaves no readable cache.

    Raises:
        NoDataError: no records, or a missing image. CorruptFileError: an unreadable image.
        CohortError: two records with the same file name (the lookup key).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX_FILE
    index_path.unlink(missing_ok=True)
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    offset = 0
    with open(out / PIXELS_FILE, "wb") as pixels:
        for record in records:
            name = Path(record.path).name
            if name in seen:
                raise CohortError(
                    f"Two records share the image file name {name!r}; a cache keys images by name."
                )
            seen.add(name)
            image = np.ascontiguousarray(read_image(record.path), dtype=np.uint8)
            pixels.write(image.tobytes())
            entries.append(_entry(record, offset, (int(image.shape[0]), int(image.shape[1]))))
            offset += image.size
            if progress is not None:
                progress(len(entries))
    if not entries:
        raise NoDataError(f"No records to cache into {out}.")
    index = {"format_version": CACHE_FORMAT_VERSION, "source": source, "bytes": offset, "images": entries}
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index))
    tmp.replace(index_path)
    return out


class SliceCache:
    """A slice cache opened read-only: ``len(cache)``, ``cache.image(i)`` -> (H, W) uint8 (a view of
    the memory map), ``cache.find(file_name)`` -> index or None, ``cache.records()``.

    Raises:
        NoDataError: ``folder`` is not a cache. CohortError: an unknown format version or a
        pixel file shorter than the index says.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if not is_slice_cache(self.folder):
            raise NoDataError(
                f"{self.folder} is not a slice cache (no {INDEX_FILE} + {PIXELS_FILE}). "
                "Build one with `covidct cache SPLIT --images DIR --out CACHE`."
            )
        index = json.loads((self.folder / INDEX_FILE).read_text())
        version = index.get("format_version")
        if version != CACHE_FORMAT_VERSION:
            raise CohortError(
                f"Slice cache {self.folder} has format version {version}, this covidct reads "
                f"{CACHE_FORMAT_VERSION}; rebuild it with `covidct cache`."
            )
        self.source = str(index.get("source", ""))
        self.entries: list[dict[str, Any]] = index["images"]
        size = (self.folder / PIXELS_FILE).stat().st_size
        if size < int(index["bytes"]):
            raise CohortError(
                f"Slice cache {self.folder}: {PIXELS_FILE} has {size} bytes but the index needs "
                f"{index['bytes']}; the cache is truncated, rebuild it."
            )
        self.pixels = np.memmap(self.folder / PIXELS_FILE, dtype=np.uint8, mode="r", shape=(size,))
        self._by_file = {e["file"]: i for i, e in enumerate(self.entries)}

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, file_name: str) -> int | None:
        """Index of the image whose file name is ``file_name`` (no folder), or None."""
        return self._by_file.get(file_name)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as a read-only (H, W) uint8 view of the memory map."""
        entry = self.entries[index]
        h, w = entry["shape"]
        start = int(entry["offset"])
        return self.pixels[start : start + h * w].reshape(h, w)

    def records(self, image_root: str | os.PathLike[str] | None = None) -> list[CaseRecord]:
        """One `CaseRecord` per image; ``path`` is ``image_root / file`` (default: the cache folder),
        so the cache finds the image by its file name."""
        root = Path(image_root) if image_root is not None else self.folder
        out = []
        for e in self.entries:
            box = e.get("box")
            out.append(
                CaseRecord(
                    case_id=e["case_id"],
                    path=root / e["file"],
                    label=e["label"],
                    patient_id=e["patient_id"],
                    split=e.get("split"),
                    source=e.get("source"),
                    box=tuple(int(v) for v in box) if box is not None else None,
                    slice_index=e.get("slice_index"),
                )
            )
        return out
