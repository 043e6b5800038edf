"""Seeded generator of hostile and broken inputs for the readers (issue 15).

`prepare_seeds` builds small, valid base material once: from the shared series (../shared/data:
LIDC-IDRI uncompressed slices with their real headers, COVID-CT-MD JPEG Lossless and JPEG 2000 files
as they are, the example NIfTI, UCSD PNG/JPG slices, COVIDx split lines) or, when that folder is
absent, from synthetic phantoms written by covidct's own DICOM/NIfTI writers. `make_case(seeds, i,
seed, out)` then derives case ``i`` of the corpus from that material, deterministically: the family
is ``FAMILIES[i % len(FAMILIES)]`` and every random choice comes from ``default_rng([seed, i])``.

A case is a path plus what to call on it: ``read_volume`` ("volume") or ``read_cohort`` ("cohort").
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import socket
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED_SLICES = 8
LONG_SLICES = 32
"""The long series has enough slices for the 5% partial-study rule to skip one bad slice."""
SMALL_SIZE = 64
HOSTILE_NUMBERS = [
    b"abc",
    b"nan",
    b"inf",
    b"-inf",
    b"1e400",
    b"-1e400",
    b"0",
    b"-1",
    b"",
    b"1\\2",
    b"9" * 40,
    b"\xff\xfe",
    b"0x10",
    b"1e-320",
    b"65535",
    b"-32768",
    b"4294967295",
]
EDITABLE_TAGS: list[tuple[int, int, str]] = [
    (0x0028, 0x1053, "DS"),  # RescaleSlope
    (0x0028, 0x1052, "DS"),  # RescaleIntercept
    (0x0020, 0x0032, "DS"),  # ImagePositionPatient
    (0x0020, 0x0037, "DS"),  # ImageOrientationPatient
    (0x0028, 0x0030, "DS"),  # PixelSpacing
    (0x0018, 0x0050, "DS"),  # SliceThickness
    (0x0018, 0x0088, "DS"),  # SpacingBetweenSlices
    (0x0018, 0x1120, "DS"),  # GantryDetectorTilt
    (0x0020, 0x0013, "IS"),  # InstanceNumber
    (0x0028, 0x0008, "IS"),  # NumberOfFrames
    (0x0028, 0x0010, "US"),  # Rows
    (0x0028, 0x0011, "US"),  # Columns
    (0x0028, 0x0100, "US"),  # BitsAllocated
    (0x0028, 0x0101, "US"),  # BitsStored
    (0x0028, 0x0103, "US"),  # PixelRepresentation
    (0x0028, 0x0002, "US"),  # SamplesPerPixel
    (0x0028, 0x0120, "US"),  # PixelPaddingValue
    (0x0020, 0x000E, "UI"),  # SeriesInstanceUID
    (0x0008, 0x0060, "CS"),  # Modality
    (0x0008, 0x0008, "CS"),  # ImageType
    (0x0028, 0x0004, "CS"),  # PhotometricInterpretation
    (0x0010, 0x1010, "AS"),  # PatientAge
]
SYNTAX_UIDS = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4.5",
    "",
    "1.2.840.10008.1.2.4.201",
]


@dataclass
class Seeds:
    """Valid base material every case is derived from."""

    root: Path
    origin: str
    """'shared' (derived from ../shared/data) or 'synthetic'."""
    series: list[Path]
    """Folders of small DICOM series (uncompressed 64x64 with real headers; compressed as released)."""
    long_series: Path
    nifti: list[Path]
    images: list[Path]
    image_folder: Path
    split_lines: list[str]


@dataclass
class Case:
    index: int
    family: str
    variant: str
    kind: str
    """'volume' -> read_volume(path); 'cohort' -> read_cohort(path)."""
    path: Path


# ---------------------------------------------------------------- seeds
def _downsample_dicom(src: Path, dst: Path, factor: int) -> None:
    """Rewrite an uncompressed slice at 1/factor resolution, keeping every other header element."""
    import pydicom

    ds = pydicom.dcmread(src)
    arr = ds.pixel_array[::factor, ::factor].copy()
    ds.Rows, ds.Columns = arr.shape
    ds.PixelSpacing = [float(v) * factor for v in ds.PixelSpacing]
    ds.PixelData = arr.tobytes()
    ds.save_as(dst)


def _shifted_copy(src: Path, dst: Path, dz: float) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + dz]
    ds.InstanceNumber = int(ds.get("InstanceNumber", 0) or 0) + 1000
    ds.save_as(dst)


def _shared_seeds(root: Path, shared: Path) -> Seeds:
    from PIL import Image

    lidc = sorted((shared / "lidc-idri-small").rglob("*.dcm"))
    first_series = sorted(p for p in lidc if p.parent == lidc[0].parent)[:SEED_SLICES]
    small = root / "dicom-lidc64"
    small.mkdir()
    for p in first_series:
        _downsample_dicom(p, small / p.name, 512 // SMALL_SIZE)
    long = root / "dicom-long"
    long.mkdir()
    import pydicom

    files = sorted(small.iterdir())
    z = sorted(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in files)
    span = z[-1] - z[0] + float(np.median(np.diff(z)))
    for copy in range(LONG_SLICES // len(files)):
        for p in files:
            _shifted_copy(p, long / f"c{copy}{p.name}", -span * copy)
    ctmd = root / "dicom-ctmd"
    ctmd.mkdir()
    for p in sorted((shared / "covid-ct-md" / "COVID-19" / "P001").glob("*.dcm"))[:4]:
        shutil.copy(p, ctmd / p.name)
    j2k = root / "dicom-j2k"
    j2k.mkdir()
    for p in sorted((shared / "misc-ct" / "example_ct_dicom_j2k").rglob("*"))[:4]:
        if p.is_file():
            shutil.copy(p, j2k / p.name)
    import nibabel as nib

    img = nib.load(str(shared / "misc-ct" / "example_ct.nii.gz"))
    data = np.asarray(img.dataobj)[::4, ::4, ::4]
    affine = img.affine.copy()
    affine[:3, :3] *= 4
    nifti = [root / "ct.nii.gz", root / "ct.nii"]
    for path in nifti:
        nib.save(nib.Nifti1Image(data, affine), str(path))
    sources = sorted((shared / "ucsd-covid-ct" / "CT_COVID").iterdir(), key=lambda p: p.stat().st_size)[:2]
    sources += sorted(
        (shared / "ucsd-covid-ct" / "CT_NonCOVID").glob("*.jpg"), key=lambda p: p.stat().st_size
    )[:2]
    images = []
    for k, p in enumerate(sources):
        images.append(root / f"img{k}{p.suffix.lower()}")
        shutil.copy(p, images[-1])
    grey = np.asarray(Image.open(sources[0]).convert("L").resize((SMALL_SIZE, SMALL_SIZE)))
    split = (shared / "covidx-ct-splits" / "val_COVIDx_CT-3A.txt").read_text().splitlines()[:40]
    return Seeds(root, "shared", [small, ctmd, j2k], long, nifti, images, _image_folder(root, grey), split)


def _synthetic_seeds(root: Path) -> Seeds:
    from PIL import Image

    from covidct.io import write_nifti
    from covidct.io.dicom_write import write_dicom_series
    from covidct.synthetic import make_phantom

    volume = make_phantom("COVID-19", shape=(SEED_SLICES, SMALL_SIZE, SMALL_SIZE), seed=0).volume
    series = [root / "dicom-synth"]
    write_dicom_series(volume, series[0])
    for syntax in ("rle", "jpeg-ls", "jpeg2000"):
        try:
            write_dicom_series(volume, root / f"dicom-{syntax}", transfer_syntax=syntax)
            series.append(root / f"dicom-{syntax}")
        except Exception:  # noqa: BLE001 - an optional encoder is missing: fewer seeds
            shutil.rmtree(root / f"dicom-{syntax}", ignore_errors=True)
    long_volume = make_phantom("Normal", shape=(LONG_SLICES, SMALL_SIZE, SMALL_SIZE), seed=1).volume
    write_dicom_series(long_volume, root / "dicom-long")
    nifti = [write_nifti(volume, root / "ct.nii.gz"), write_nifti(volume, root / "ct.nii")]
    grey = np.clip((volume.array[SEED_SLICES // 2] + 1000) / 6, 0, 255).astype(np.uint8)
    images = [root / "img0.png", root / "img1.jpg"]
    Image.fromarray(grey).save(images[0])
    Image.fromarray(grey).save(images[1])
    split = [f"NCP_{k}_{k + 100}_{j:04d}.png 2 0 10 60 50" for k in range(4) for j in range(10)]
    return Seeds(
        root, "synthetic", series, root / "dicom-long", nifti, images, _image_folder(root, grey), split
    )


def _image_folder(root: Path, grey: np.ndarray) -> Path:
    from PIL import Image

    folder = root / "png-slices"
    folder.mkdir()
    for k in range(LONG_SLICES):
        Image.fromarray(np.roll(grey, k, axis=0)).save(folder / f"slice{k}.png")
    return folder


def prepare_seeds(root: Path, shared: Path | None) -> Seeds:
    """Base material in ``root`` from ``shared`` (../shared/data) when given, else synthetic."""
    root.mkdir(parents=True, exist_ok=True)
    if shared is not None and (shared / "lidc-idri-small").is_dir():
        return _shared_seeds(root, shared)
    return _synthetic_seeds(root)


# ---------------------------------------------------------------- helpers
def _link_series(src: Path, dst: Path) -> list[Path]:
    """``dst`` holding symlinks to the files of ``src`` (cheap); returns the links."""
    dst.mkdir(parents=True, exist_ok=True)
    links = []
    for p in sorted(src.iterdir()):
        link = dst / p.name
        link.symlink_to(p)
        links.append(link)
    return links


def _own(link: Path) -> Path:
    """Replace a symlink by a private copy that may be modified."""
    data = link.read_bytes()
    link.unlink()
    link.write_bytes(data)
    return link


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _flip_bytes(data: bytes, rng: np.random.Generator, n: int, head: int | None = None) -> bytes:
    buf = bytearray(data)
    limit = min(len(buf), head) if head else len(buf)
    for _ in range(n):
        at = int(rng.integers(limit))
        buf[at] = int(rng.integers(256)) if rng.random() < 0.5 else buf[at] ^ (1 << int(rng.integers(8)))
    return bytes(buf)


def _set_raw(path: Path, tag: tuple[int, int], vr: str, value: bytes) -> None:
    """Set one element to raw bytes (no validation), as a hostile writer would."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(path)
    t = Tag(*tag)
    ds._dict[t] = RawDataElement(t, vr, len(value), value, 0, False, True)  # noqa: SLF001
    ds.save_as(path)


def _series_seed(seeds: Seeds, rng: np.random.Generator) -> Path:
    return _pick(rng, seeds.series)  # type: ignore[return-value]


# ---------------------------------------------------------------- families
def fam_byteflip(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(_pick(rng, ["dicom-header", "dicom-any", "nifti", "image"]))
    if variant.startswith("dicom"):
        links = _link_series(_series_seed(seeds, rng), out / "s")
        for link in rng.choice(links, size=int(rng.integers(1, 3)), replace=False):
            f = _own(Path(link))
            head = 2048 if variant == "dicom-header" else None
            f.write_bytes(_flip_bytes(f.read_bytes(), rng, int(rng.integers(1, 16)), head))
        return variant, "volume", out / "s"
    src = _pick(rng, seeds.nifti if variant == "nifti" else seeds.images)
    dst = out / Path(str(src)).name
    data = Path(str(src)).read_bytes()
    if str(dst).endswith(".gz") and rng.random() < 0.7:  # flip the header inside the gzip stream
        raw = gzip.decompress(data)
        data = gzip.compress(_flip_bytes(raw, rng, int(rng.integers(1, 8)), 352), compresslevel=1)
    else:
        data = _flip_bytes(data, rng, int(rng.integers(1, 16)), 512 if rng.random() < 0.5 else None)
    dst.write_bytes(data)
    return variant, "volume", dst


def fam_truncate(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(_pick(rng, ["dicom-one", "dicom-all", "nifti", "image"]))
    if variant.startswith("dicom"):
        links = _link_series(_series_seed(seeds, rng), out / "s")
        chosen = links if variant == "dicom-all" else [_pick(rng, links)]
        for link in chosen:
            f = _own(Path(str(link)))
            data = f.read_bytes()
            f.write_bytes(data[: int(rng.integers(0, len(data)))])
        return variant, "volume", out / "s"
    src = Path(str(_pick(rng, seeds.nifti if variant == "nifti" else seeds.images)))
    data = src.read_bytes()
    (out / src.name).write_bytes(data[: int(rng.integers(0, len(data)))])
    return variant, "volume", out / src.name


def fam_tagedit(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    links = _link_series(_series_seed(seeds, rng), out / "s")
    group, elem, vr = _pick(rng, EDITABLE_TAGS)  # type: ignore[misc]
    every = rng.random() < 0.5
    if vr == "US":
        value = struct.pack("<H", int(_pick(rng, [0, 1, 2, 3, 7, 8, 12, 15, 17, 32, 64, 255, 4096, 65535])))
    elif rng.random() < 0.1:
        vr, value = "ZZ", b"ab"  # unknown VR
    else:
        value = bytes(_pick(rng, HOSTILE_NUMBERS))  # type: ignore[arg-type]
        if group == 0x0020 and elem in (0x0032, 0x0037) and rng.random() < 0.5:
            value = b"\\".join(bytes(_pick(rng, HOSTILE_NUMBERS)) for _ in range(3 if elem == 0x32 else 6))
    for link in links if every else [_pick(rng, links)]:
        _set_raw(_own(Path(str(link))), (group, elem), vr, value)
    return f"({group:04X},{elem:04X}){'-all' if every else ''}", "volume", out / "s"


def _with_syntax(path: Path, uid: str) -> None:
    """Rewrite the file meta with TransferSyntaxUID ``uid`` ('' removes it), keeping the dataset bytes."""
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    raw = path.read_bytes()
    fh = io.BytesIO(raw)
    read_preamble(fh, False)
    meta = _read_file_meta_info(fh)
    body = raw[fh.tell() :]
    if uid:
        meta.TransferSyntaxUID = uid
    elif "TransferSyntaxUID" in meta:
        del meta.TransferSyntaxUID
    buf = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=False)
    path.write_bytes(raw[:128] + b"DICM" + buf.getvalue() + body)


def fam_syntax_lie(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    links = _link_series(_series_seed(seeds, rng), out / "s")
    uid = str(_pick(rng, SYNTAX_UIDS))
    every = rng.random() < 0.6
    for link in links if every else [_pick(rng, links)]:
        _with_syntax(_own(Path(str(link))), uid)
    return f"{uid or '<none>'}{'-all' if every else ''}", "volume", out / "s"


def fam_series_mix(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(
        _pick(
            rng,
            [
                "one-slice",
                "one-file",
                "two-series",
                "duplicates",
                "mixed-sizes",
                "dir-with-junk",
                "nested",
                "empty-dir",
            ],
        )
    )
    dst = out / "s"
    if variant == "one-slice":
        links = _link_series(_series_seed(seeds, rng), dst)
        for link in links[1:]:
            link.unlink()
    elif variant == "one-file":
        return variant, "volume", Path(str(_pick(rng, sorted(_series_seed(seeds, rng).iterdir()))))
    elif variant == "two-series":
        _link_series(seeds.series[0], dst / "a")
        _link_series(seeds.series[-1], dst / "b")
    elif variant == "duplicates":
        links = _link_series(_series_seed(seeds, rng), dst)
        for k, link in enumerate(links[:3]):
            shutil.copy(link, dst / f"dup{k}.dcm")
    elif variant == "mixed-sizes":
        _link_series(seeds.series[0], dst)
        src = sorted(seeds.series[-1].iterdir())[0]
        (dst / "odd.dcm").symlink_to(src)
    elif variant == "dir-with-junk":
        _link_series(_series_seed(seeds, rng), dst)
        (dst / "README.txt").write_text("junk")
        (dst / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nno")
        (dst / "empty.dcm").write_bytes(b"")
        (dst / "pre.dcm").write_bytes(b"\0" * 128 + b"DICM")
    elif variant == "nested":
        _link_series(_series_seed(seeds, rng), dst / "a" / "b" / "c" / "d")
    else:
        dst.mkdir()
    return variant, "volume", dst


def fam_partial(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(_pick(rng, ["dicom-1-bad", "dicom-3-bad", "png-1-bad", "png-3-bad"]))
    n_bad = 1 if "-1-" in variant else 3
    src = seeds.long_series if variant.startswith("dicom") else seeds.image_folder
    links = _link_series(src, out / "s")
    for link in rng.choice(links, size=n_bad, replace=False):
        f = _own(Path(link))
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if rng.random() < 0.5 else _flip_bytes(data, rng, 64))
    return variant, "volume", out / "s"


def _zip_write(path: Path, members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            zf.writestr(info, data)


def fam_zip(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(
        _pick(
            rng,
            [
                "plain",
                "slip",
                "absolute",
                "bomb-ratio",
                "bomb-size",
                "a-and-a/b",
                "long-name",
                "empty-name",
                "control-chars",
                "encrypted-flag",
                "method-99",
                "truncated",
                "flipped",
                "nested-zip",
                "many-members",
                "non-utf8",
            ],
        )
    )
    files = [(p.name, p.read_bytes()) for p in sorted(_series_seed(seeds, rng).iterdir())]
    path = out / "study.zip"
    members = {
        "plain": files,
        "slip": [("../../evil.dcm", files[0][1]), *files],
        "absolute": [("/tmp/evil.dcm", files[0][1]), *files],
        "bomb-ratio": [*files, ("zeros.bin", b"\0" * (1 << 24))],
        "a-and-a/b": [("a", files[0][1]), ("a/b.dcm", files[1][1]), *files[2:]],
        "long-name": [("x" * 300 + ".dcm", files[0][1]), *files[1:]],
        "empty-name": [("", files[0][1]), ("/", b""), *files[1:]],
        "control-chars": [("a\x01\x7f\u202e.dcm", files[0][1]), *files[1:]],
        "nested-zip": [("inner.zip", b"PK\x03\x04" + files[0][1][:100]), *files],
        "many-members": [(f"m{k}", b"") for k in range(21_000)],
    }.get(variant, files)
    if variant == "bomb-size":
        zeros = b"\0" * (1 << 24)
        members = [(f"z{k}.dcm", zeros) for k in range(int(rng.integers(1, 4)))]
    _zip_write(path, members)
    data = bytearray(path.read_bytes())
    if variant in ("encrypted-flag", "method-99", "non-utf8"):
        for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
            at = data.find(sig)
            while at >= 0:
                if variant == "encrypted-flag":
                    data[at + flag_at] |= 1
                elif variant == "method-99":
                    data[at + method_at] = 99
                else:  # UTF-8 flag set on names that are not UTF-8
                    data[at + flag_at + 1] |= 0x08
                at = data.find(sig, at + 4)
        if variant == "non-utf8":
            data = data.replace(files[0][0].encode(), b"\xff\xfe" + files[0][0].encode()[2:])
    elif variant == "truncated":
        data = data[: int(rng.integers(0, len(data)))]
    elif variant == "flipped":
        data = bytearray(_flip_bytes(bytes(data), rng, int(rng.integers(1, 32))))
    path.write_bytes(bytes(data))
    return variant, "volume", path


def _nifti_header(shape: tuple[int, ...], dtype: type = np.int16) -> object:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    header["sform_code"] = 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0]
    return header


def fam_nifti(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    import nibabel as nib

    variant = str(
        _pick(
            rng,
            [
                "nan",
                "inf",
                "all-nan",
                "4d",
                "4d-singleton",
                "2d",
                "one-voxel",
                "dims-bomb",
                "vox-offset",
                "ext-esize",
                "zero-pixdim",
                "nan-affine",
                "slope-inf",
                "complex",
                "rgb",
                "gz-bomb",
                "float64",
            ],
        )
    )
    path = out / ("ct.nii.gz" if rng.random() < 0.7 else "ct.nii")
    base = np.asarray(nib.load(str(seeds.nifti[0])).dataobj).astype(np.float32)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])

    def save(data: np.ndarray, aff: np.ndarray = affine) -> None:
        nib.save(nib.Nifti1Image(data, aff), str(path))

    def raw(header: object, payload: bytes, ext: bytes = b"\0\0\0\0") -> None:
        blob = header.binaryblock + ext + payload  # type: ignore[attr-defined]
        path.write_bytes(gzip.compress(blob, 1) if path.name.endswith(".gz") else blob)

    if variant in ("nan", "inf", "all-nan"):
        data = base.copy()
        mask = rng.random(data.shape) < (1.0 if variant == "all-nan" else 0.01)
        data[mask] = np.nan if variant != "inf" else -np.inf
        save(data)
    elif variant == "4d":
        save(np.stack([base, base], axis=-1))
    elif variant == "4d-singleton":
        save(base[..., np.newaxis])
    elif variant == "2d":
        save(base[:, :, 0])
    elif variant == "one-voxel":
        save(base[:1, :1, :1])
    elif variant == "dims-bomb":
        raw(_nifti_header(tuple(int(d) for d in rng.integers(2000, 32767, size=3))), b"\0" * 1024)
    elif variant == "vox-offset":
        header = _nifti_header((4, 4, 4))
        header["vox_offset"] = float(_pick(rng, [1e9, 3e9, -352, np.inf]))  # type: ignore[index]
        raw(header, b"\0" * 128)
    elif variant == "ext-esize":
        header = _nifti_header((4, 4, 4))
        header["vox_offset"] = 352 + 32  # type: ignore[index]
        esize = int(_pick(rng, [2**31 - 8, 10**9, 24, 7, -16]))
        raw(header, b"\0" * 128, ext=b"\1\0\0\0" + struct.pack("<ii", esize, 0) + b"\0" * 24)
    elif variant == "zero-pixdim":
        header = _nifti_header((4, 4, 4))
        header["srow_y"] = [0, 0, 0, 0]  # type: ignore[index]
        raw(header, b"\0" * 128)
    elif variant == "nan-affine":
        header = _nifti_header((4, 4, 4))
        header["srow_x"] = [np.nan, 0, 0, np.inf]  # type: ignore[index]
        raw(header, b"\0" * 128)
    elif variant == "slope-inf":
        header = _nifti_header((4, 4, 4))
        header["scl_slope"] = float(_pick(rng, [np.inf, 1e38, np.nan, -1e38]))  # type: ignore[index]
        raw(header, b"\1" * 128)
    elif variant == "complex":
        save(base.astype(np.complex64))
    elif variant == "rgb":
        header = _nifti_header((4, 4, 4))
        header.set_data_dtype(np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]))  # type: ignore[attr-defined]
        raw(header, b"\7" * 192)
    elif variant == "gz-bomb":
        path = out / "ct.nii.gz"
        header = _nifti_header((1024, 1024, 1024))
        path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * (1 << 25), 9))  # type: ignore[attr-defined]
    else:
        save(base.astype(np.float64))
    return variant, "volume", path


def _png_with_size(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    import zlib

    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def fam_image(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    from PIL import Image

    variant = str(
        _pick(
            rng,
            [
                "png-dims-bomb",
                "jpeg-dims-bomb",
                "tiff-dims-bomb",
                "ztxt-bomb",
                "itxt-huge",
                "png-16bit",
                "tiff-float-nan",
                "gif-as-png",
                "empty",
                "mixed-sizes",
                "one-pixel",
                "many-frames-tiff",
                "bmp-negative",
            ],
        )
    )
    if variant == "png-dims-bomb":
        path = out / "bomb.png"
        path.write_bytes(
            _png_with_size(int(rng.integers(20000, 2**31 - 1)), int(rng.integers(20000, 2**31 - 1)))
        )
    elif variant == "jpeg-dims-bomb":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "JPEG")
        data = bytearray(buf.getvalue())
        at = data.find(b"\xff\xc0")
        data[at + 5 : at + 9] = struct.pack(">HH", 65500, 65500)
        path = out / "bomb.jpg"
        path.write_bytes(bytes(data))
    elif variant == "tiff-dims-bomb":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "TIFF")
        data = bytearray(buf.getvalue())
        for tag in (256, 257):  # ImageWidth, ImageLength entries (SHORT or LONG)
            at = data.find(struct.pack("<H", tag), 8)
            if at > 0:
                data[at + 2 : at + 4] = struct.pack("<H", 4)
                data[at + 8 : at + 12] = struct.pack("<I", 100_000)
        path = out / "bomb.tif"
        path.write_bytes(bytes(data))
    elif variant in ("ztxt-bomb", "itxt-huge"):
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        if variant == "ztxt-bomb":
            info.add_text("comment", "A" * (1 << 24), zip=True)
        else:
            info.add_itxt("comment", "B" * (1 << 22), zip=True)
        path = out / "text.png"
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, pnginfo=info)
    elif variant == "png-16bit":
        path = out / "deep.png"
        Image.fromarray(rng.integers(0, 65535, (32, 32)).astype(np.uint16)).save(path)
    elif variant == "tiff-float-nan":
        path = out / "float.tif"
        data = rng.random((16, 16)).astype(np.float32)
        data[0, 0] = np.nan
        Image.fromarray(data).save(path)
    elif variant == "gif-as-png":
        path = out / "anim.png"
        frames = [Image.fromarray(np.full((8, 8), k, np.uint8)) for k in range(3)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    elif variant == "empty":
        path = out / "empty.png"
        path.write_bytes(b"")
    elif variant == "mixed-sizes":
        path = out / "s"
        _link_series(seeds.image_folder, path)
        Image.fromarray(np.zeros((5, 7), np.uint8)).save(path / "slice99.png")
    elif variant == "one-pixel":
        path = out / "one.png"
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    elif variant == "many-frames-tiff":
        path = out / "pages.tif"
        frames = [Image.fromarray(np.full((8, 8), k, np.uint8)) for k in range(50)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    else:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, "BMP")
        data = bytearray(buf.getvalue())
        data[18:26] = struct.pack("<ii", -(2**31), 2**31 - 1)
        path = out / "odd.bmp"
        path.write_bytes(bytes(data))
    return variant, "volume", path


def fam_cohort(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(
        _pick(
            rng,
            [
                "latin1",
                "utf16",
                "nul",
                "extra-fields",
                "inf-box",
                "nan-box",
                "huge-field",
                "empty",
                "header-only",
                "bom",
                "missing-columns",
                "unknown-class",
                "split-flipped",
                "split-short-line",
                "class-folders-odd",
                "binary",
            ],
        )
    )
    good_rows = "path,label,patient_id,split\n" + "".join(
        f"{p.name},COVID-19,P{k},train\n" for k, p in enumerate(sorted(seeds.image_folder.iterdir())[:5])
    )
    lines = "\n".join(seeds.split_lines) + "\n"
    name, content = "cohort.csv", good_rows.encode()
    if variant == "latin1":
        content = (good_rows + "x.png,COVID-19,P\u00e9\u00e8,val\n").encode("latin-1")
    elif variant == "utf16":
        content = good_rows.encode("utf-16")
    elif variant == "nul":
        content = good_rows.encode().replace(b",P1,", b",P\0,")
    elif variant == "extra-fields":
        content = (good_rows + "a.png,COVID-19,P9,test,extra,more\n").encode()
    elif variant in ("inf-box", "nan-box", "split-flipped", "split-short-line"):
        name = "val_split.txt"
        bad = {
            "inf-box": "NCP_1_2_0003.png 2 0 0 inf 10",
            "nan-box": "NCP_1_2_0003.png 2 nan 0 10 10",
            "split-flipped": "NCP_1_2_0003.png 2 50 50 10 10",
            "split-short-line": "NCP_1_2_0003.png 2",
        }[variant]
        content = (lines + bad + "\n").encode()
    elif variant == "huge-field":
        content = (good_rows + '"' + "x" * 200_000 + '",COVID-19,P1,train\n').encode()
    elif variant == "empty":
        content = b""
    elif variant == "header-only":
        content = b"path,label,patient_id\n"
    elif variant == "bom":
        content = b"\xef\xbb\xbf" + good_rows.encode()
    elif variant == "missing-columns":
        content = b"file,class\na.png,1\n"
    elif variant == "unknown-class":
        content = (good_rows + "a.png,Flu,P9,train\n").encode()
    elif variant == "binary":
        content = bytes(rng.integers(0, 256, 4096, dtype=np.uint8))
    else:  # class folders with odd content
        root = out / "cohort"
        for cls in ("CT_COVID", "CT_NonCOVID"):
            (root / cls).mkdir(parents=True)
            (root / cls / "img.png").symlink_to(seeds.images[0])
        (root / "CT_COVID" / "broken.png").write_bytes(b"not png")
        (root / "Martian").mkdir()
        os.mkfifo(root / "CT_COVID" / "pipe.png")
        (root / "CT_NonCOVID" / "loop").symlink_to(root / "CT_NonCOVID")
        return variant, "cohort", root
    (out / name).write_bytes(content)
    return variant, "cohort", out / name


def fam_special(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(
        _pick(
            rng,
            [
                "fifo-nii",
                "fifo-dcm",
                "fifo-in-series",
                "fifo-in-pngs",
                "fifo-zip",
                "fifo-csv",
                "dev-zero",
                "dev-null",
                "socket",
                "symlink-loop",
                "dangling-link",
                "link-to-dev-zero",
                "link-to-fifo",
                "dir-link-loop",
            ],
        )
    )
    kind = "cohort" if variant == "fifo-csv" else "volume"
    if variant in ("fifo-nii", "fifo-dcm", "fifo-zip", "fifo-csv"):
        path = (
            out
            / {"fifo-nii": "x.nii.gz", "fifo-dcm": "x.dcm", "fifo-zip": "x.zip", "fifo-csv": "c.csv"}[variant]
        )
        os.mkfifo(path)
    elif variant in ("fifo-in-series", "fifo-in-pngs", "link-to-fifo", "link-to-dev-zero", "dir-link-loop"):
        path = out / "s"
        src = seeds.image_folder if variant == "fifo-in-pngs" else _series_seed(seeds, rng)
        _link_series(src, path)
        if variant == "link-to-dev-zero":
            (path / "zero.dcm").symlink_to("/dev/zero")
        elif variant == "dir-link-loop":
            (path / "loop").symlink_to(path)
        else:
            os.mkfifo(out / "pipe")
            target = path / ("pipe.png" if variant == "fifo-in-pngs" else "pipe.dcm")
            if variant == "link-to-fifo":
                target.symlink_to(out / "pipe")
            else:
                os.mkfifo(target)
    elif variant in ("dev-zero", "dev-null"):
        path = Path("/dev/zero" if variant == "dev-zero" else "/dev/null")
    elif variant == "socket":
        path = out / "sock"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif variant == "symlink-loop":
        path = out / "a.dcm"
        path.symlink_to(out / "b.dcm")
        (out / "b.dcm").symlink_to(path)
    else:
        path = out / "gone.nii.gz"
        path.symlink_to(out / "nowhere")
    return variant, kind, path


def fam_names(seeds: Seeds, rng: np.random.Generator, out: Path) -> tuple[str, str, Path]:
    variant = str(
        _pick(
            rng,
            ["dicom-bytes-names", "png-bytes-names", "dir-bytes-name", "newline-names", "percent-and-spaces"],
        )
    )
    odd = [b"\xff\xfe", b"\xe9t\xe9", b"a\nb", b"%s %d", b"\x1b[31m"]
    if variant == "dir-bytes-name":
        path = Path(os.fsdecode(bytes(out) + b"/\xff\xfe-series"))
        _link_series(_series_seed(seeds, rng), path)
        return variant, "volume", path
    src = seeds.image_folder if variant == "png-bytes-names" else _series_seed(seeds, rng)
    path = out / "s"
    path.mkdir()
    for k, p in enumerate(sorted(src.iterdir())):
        stem = bytes(_pick(rng, odd)) + str(k).encode()  # type: ignore[arg-type]
        if variant == "newline-names":
            stem = b"line\n" + str(k).encode()
        elif variant == "percent-and-spaces":
            stem = f"% {k} %".encode()
        name = os.fsdecode(stem + (b".png" if src == seeds.image_folder else b".dcm"))
        (path / name).symlink_to(p)
    return variant, "volume", path


FAMILIES: dict[str, Callable[[Seeds, np.random.Generator, Path], tuple[str, str, Path]]] = {
    "byteflip": fam_byteflip,
    "truncate": fam_truncate,
    "tagedit": fam_tagedit,
    "syntax-lie": fam_syntax_lie,
    "series-mix": fam_series_mix,
    "partial": fam_partial,
    "zip": fam_zip,
    "nifti": fam_nifti,
    "image": fam_image,
    "cohort": fam_cohort,
    "special": fam_special,
    "names": fam_names,
}
FAMILY_NAMES = list(FAMILIES)


def make_case(seeds: Seeds, index: int, seed: int, out: Path) -> Case:
    """Build case ``index`` of the corpus with seed ``seed`` in the (new, empty) folder ``out``."""
    family = FAMILY_NAMES[index % len(FAMILY_NAMES)]
    rng = np.random.default_rng([seed, index])
    out.mkdir(parents=True, exist_ok=True)
    variant, kind, path = FAMILIES[family](seeds, rng, out)
    return Case(index, family, variant, kind, path)
