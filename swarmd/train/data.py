"""Site data: Decathlon-format datalists, image file inspection, and up-front validation.

A site's datalist is checked completely before any training starts. Every problem in every entry
is collected and reported in one DataError that names each bad file and what is wrong with it
(missing, corrupt, wrong channel count, wrong shape), so a bad file never silently shrinks the
data a site trains on. Inspection reads headers (and, for compressed or truncated-looking files,
streams the bytes once) without building arrays; the bundle's own MONAI transforms do the loading.
"""

from __future__ import annotations

import gzip
import json
import logging
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmd.errors import DataError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm",)
MAX_REPORTED = 20  # problems listed in one error message; the count covers all of them


# MONAI's FL client, bundle runner and weight copier log every round at INFO straight to stdout,
# bypassing the daemon's logging; the pydicom plugin probe warns on every reader built without CUDA.
_QUIET = (
    ("monai.fl.client.monai_algo", logging.WARNING),
    ("monai.bundle.workflows", logging.ERROR),
    ("monai.networks.utils", logging.WARNING),
    ("monai.data.nvimgcodec_pydicom_plugin", logging.ERROR),
)


def quiet_monai() -> None:
    """Turn MONAI's per-round chatter down to warnings. Imports first: monai's get_logger()
    resets a module's logger to INFO when that module loads."""
    import monai.bundle.workflows
    import monai.data
    import monai.fl.client.monai_algo
    import monai.networks.utils  # noqa: F401

    for name, level in _QUIET:
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, as the bundle's loader will see it: channel count and spatial shape."""

    path: Path
    kind: str  # "pil", "nifti" or "dicom"
    channels: int
    spatial_shape: tuple[int, ...]


@dataclass(frozen=True)
class InputSpec:
    """What a bundle's network expects of an image (from `network_data_format` in its metadata)."""

    channels: int
    spatial_dims: int


@dataclass(frozen=True)
class Datalist:
    path: Path
    base_dir: Path
    section: str
    items: tuple[dict[str, Any], ...]  # paths resolved against base_dir


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _inspect_pil(path: Path) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decodes fully: a truncated or corrupt file fails here, not mid-training
            bands = len(img.getbands())
            width, height = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({exc})") from None
    # MONAI's PILReader puts width first.
    return ImageInfo(path, "pil", 1 if bands == 1 else bands, (width, height))


def _stream_length(path: Path) -> int:
    """Uncompressed length of a gzip file; reading it all is the only way to find truncation."""
    total = 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            total += len(chunk)
    return total


def _inspect_nifti(path: Path) -> ImageInfo:
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise DataError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
        shape = tuple(int(s) for s in img.shape)
        header = img.header
        need = int(header.get_data_offset()) + int(header.get_data_dtype().itemsize) * _prod(shape)
        have = _stream_length(path) if _suffix(path) == ".nii.gz" else path.stat().st_size
    except (
        nib.filebasedimages.ImageFileError,
        HeaderDataError,
        OSError,
        EOFError,
        zlib.error,
        ValueError,
        OverflowError,  # a header's float field (vox_offset) of inf, turned into an int
    ) as exc:
        raise DataError(f"{path}: corrupt or unreadable NIfTI ({exc})") from None
    if have < need:
        raise DataError(f"{path}: truncated NIfTI ({have} bytes, header says at least {need})")
    if len(shape) < 2 or len(shape) > 4:
        raise DataError(f"{path}: NIfTI with {len(shape)} dimensions {shape}; expected 2, 3 or 4")
    if len(shape) == 4:
        return ImageInfo(path, "nifti", shape[3], shape[:3])  # MONAI reads the 4th axis as channels
    return ImageInfo(path, "nifti", 1, shape)


def _inspect_dicom(path: Path) -> ImageInfo:
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(getattr(ds, "SamplesPerPixel", 1))
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        pixel_bytes = len(ds.PixelData)
        bits = int(ds.BitsAllocated)
        compressed = bool(ds.file_meta.TransferSyntaxUID.is_compressed)
    except (
        InvalidDicomError,
        BytesLengthException,  # an element's length is not a multiple of its value size
        AttributeError,
        KeyError,
        OSError,
        ValueError,
        TypeError,  # an element present but empty (Rows or PixelData without a value)
        EOFError,
    ) as exc:
        raise DataError(f"{path}: corrupt DICOM or no pixel data ({exc})") from None
    need = rows * cols * samples * frames * bits // 8
    if not compressed and pixel_bytes < need:
        raise DataError(f"{path}: truncated DICOM pixel data ({pixel_bytes} bytes, expected {need})")
    spatial = (rows, cols) if frames == 1 else (frames, rows, cols)
    return ImageInfo(path, "dicom", samples, spatial)


def _prod(shape: Iterable[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def inspect_image(path: Path) -> ImageInfo:
    """Channels and spatial shape of one image file; DataError naming the file if it is unusable."""
    path = Path(path)
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise DataError(f"{str(path)[:200]}: cannot be read ({exc.strerror})") from None
    if not exists:
        raise DataError(f"{path}: file does not exist")
    if not regular:
        raise DataError(f"{path}: not a regular file")
    suffix = _suffix(path)
    if suffix in PIL_SUFFIXES:
        return _inspect_pil(path)
    if suffix in NIFTI_SUFFIXES:
        return _inspect_nifti(path)
    if suffix in DICOM_SUFFIXES:
        return _inspect_dicom(path)
    raise DataError(
        f"{path}: unsupported image format {suffix or '(no suffix)'!r}",
        hint=f"use one of {', '.join(PIL_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES)}",
    )


def load_image(path: Path) -> Any:
    """Load one file exactly as the bundles do (MONAI LoadImage, channel first): a MetaTensor."""
    from monai.transforms import LoadImage

    info = inspect_image(path)
    quiet_monai()
    try:
        return LoadImage(image_only=True, ensure_channel_first=True)(str(info.path))
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be loaded ({exc})") from None


def read_datalist(path: Path, section: str = "training", base_dir: Path | None = None) -> Datalist:
    """Parse a Decathlon datalist and resolve its paths (relative ones start at `base_dir`,
    by default the datalist's own directory). Structural problems raise DataError."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"datalist {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read datalist {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"datalist {path} is not valid JSON: {exc}") from None
    except RecursionError:  # json recurses once per nested array or object
        raise DataError(f"datalist {path} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise DataError(f"datalist {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError(f"datalist {path} must be a JSON object with a {section!r} list")
    entries = doc.get(section)
    if not isinstance(entries, list):
        raise DataError(f"datalist {path} has no {section!r} list")
    if not entries:
        raise DataError(f"datalist {path}: {section!r} is empty", hint="a site needs at least one image")
    base = Path(base_dir) if base_dir is not None else path.parent
    items = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DataError(f"datalist {path}: {section}[{i}] must be an object with an 'image' path")
        try:
            items.append(_resolve(entry, base))
        except (OSError, ValueError) as exc:  # a NUL in a path, or a name the OS refuses
            raise DataError(
                f"datalist {path}: {section}[{i}] names an unusable path ({str(exc)[:200]})"
            ) from None
    return Datalist(path, base, section, tuple(items))


def _resolve(entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    out = dict(entry)
    for key in ("image", "label"):
        value = out.get(key)
        if isinstance(value, str):
            out[key] = str((base / value).resolve())
    return out


def _check_entry(entry: Mapping[str, Any], spec: InputSpec, label_kind: str, n_classes: int) -> list[str]:
    """Problems with one datalist entry (empty list: fine)."""
    image = Path(entry["image"])
    try:
        info = inspect_image(image)
    except DataError as exc:
        return [str(exc)]
    problems = []
    if info.channels != spec.channels:
        problems.append(f"{image}: {info.channels} channel(s), the bundle expects {spec.channels}")
    if len(info.spatial_shape) != spec.spatial_dims:
        problems.append(
            f"{image}: shape {info.spatial_shape} is {len(info.spatial_shape)}-D, "
            f"the bundle expects {spec.spatial_dims}-D images"
        )
    label = entry.get("label")
    if label_kind == "class":
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_classes:
            problems.append(f"{image}: label {label!r} is not a class index in [0, {n_classes})")
    elif label_kind == "mask":
        problems.extend(_check_mask(image, label, info))
    return problems


def _check_mask(image: Path, label: object, info: ImageInfo) -> list[str]:
    if not isinstance(label, str):
        return [f"{image}: segmentation entry needs a 'label' file path, got {label!r}"]
    try:
        mask = inspect_image(Path(label))
    except DataError as exc:
        return [str(exc)]
    if mask.channels != 1:
        return [f"{label}: label mask has {mask.channels} channels, expected 1"]
    if mask.spatial_shape != info.spatial_shape:
        return [f"{label}: label shape {mask.spatial_shape} differs from image shape {info.spatial_shape}"]
    return []


def validate_datalist(
    datalist: Datalist, spec: InputSpec, *, label_kind: str = "none", n_classes: int = 0, workers: int = 4
) -> None:
    """Check every entry; raise one DataError listing all problems. `label_kind`: class, mask, none.

    Files are decoded on `workers` threads (image decoders and gzip release the GIL); problems
    are reported in datalist order either way.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(entry: dict[str, Any]) -> list[str]:
        return _check_entry(entry, spec, label_kind, n_classes)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        per_entry = list(pool.map(check, datalist.items))
    problems = [p for found in per_entry for p in found]
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(
            f"datalist {datalist.path} ({datalist.section}): {len(problems)} problem(s) in "
            f"{len(datalist.items)} entries:\n  {shown}{more}",
            hint="fix or remove these entries; no entry is skipped silently",
        )
