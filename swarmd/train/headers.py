"""What swarmd can read of a data file without the bundle: image headers and .npy headers.

Known formats get a cheap check for corruption before any training starts: PIL images are decoded
once, NIfTI and DICOM headers are read and their pixel data's length checked against them, and a
`.npy` file's header is parsed and its length checked. For images the channel count and spatial
shape come back (`ImageInfo`), so they can be checked against what the bundle's metadata declares.
Every other format is the bundle's business: its transforms decode it.
"""

from __future__ import annotations

import gzip
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from tokenize import TokenError

from swarmd.errors import DataError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm",)
IMAGE_SUFFIXES = PIL_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES
NUMPY_SUFFIX = ".npy"


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, as the bundle's loader will see it: channel count and spatial shape."""

    path: Path
    kind: str  # "pil", "nifti" or "dicom"
    channels: int
    spatial_shape: tuple[int, ...]


def suffix_of(path: Path) -> str:
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
        have = _stream_length(path) if suffix_of(path) == ".nii.gz" else path.stat().st_size
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
        struct.error,  # a header field too short for its value representation
        NotImplementedError,  # pydicom's word for a value representation it does not know (garbage)
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


# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 builds AST objects in one
# interpreter-wide state: two threads parsing at once (the data check runs in a pool) can fail with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). One at a time.
_AST_LOCK = threading.Lock()


def _check_npy(path: Path) -> None:
    """A .npy file's header parses and the file holds as many bytes as the header promises."""
    from numpy.lib import format as npformat

    try:
        with path.open("rb") as fh:
            major, _ = npformat.read_magic(fh)
            read = npformat.read_array_header_1_0 if major == 1 else npformat.read_array_header_2_0
            with _AST_LOCK:
                shape, _, dtype = read(fh)
            offset = fh.tell()
        have = path.stat().st_size
    except (
        ValueError,
        OSError,
        EOFError,
        SyntaxError,  # numpy parses the header as a Python literal
        TokenError,  # ... after tokenizing it
        RecursionError,
        MemoryError,
        TypeError,
    ) as exc:
        raise DataError(f"{path}: corrupt or unreadable .npy ({exc})") from None
    if dtype.hasobject:
        return  # pickled objects: no fixed length to check; the bundle's loader decides
    need = offset + dtype.itemsize * _prod(shape)
    if have < need:
        raise DataError(f"{path}: truncated .npy ({have} bytes, header says {need})")


def check_readable(path: Path) -> None:
    """The file exists, is a regular file, and its first byte can be read; DataError naming it if not."""
    path = Path(path)
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise DataError(f"{str(path)[:200]}: cannot be read ({exc.strerror})") from None
    if not exists:
        raise DataError(f"{path}: file does not exist")
    if not regular:  # a FIFO would block the read below; a directory is no data file
        raise DataError(f"{path}: not a regular file")
    try:
        with path.open("rb") as fh:
            first = fh.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not first:
        raise DataError(f"{path}: file is empty")


def inspect_file(path: Path) -> ImageInfo | None:
    """Check one data file as far as swarmd can without the bundle: readable, and not corrupt when
    its format is one swarmd reads a header of. An image's ImageInfo; None for any other format."""
    path = Path(path)
    check_readable(path)
    suffix = suffix_of(path)
    if suffix == NUMPY_SUFFIX:
        _check_npy(path)
    return _image_header(path, suffix) if suffix in IMAGE_SUFFIXES else None


def inspect_image(path: Path) -> ImageInfo:
    """Channels and spatial shape of one image file; DataError naming the file if it is unusable."""
    path = Path(path)
    check_readable(path)
    suffix = suffix_of(path)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"{path}: unsupported image format {suffix or '(no suffix)'!r}",
            hint=f"use one of {', '.join(IMAGE_SUFFIXES)}",
        )
    return _image_header(path, suffix)


def _image_header(path: Path, suffix: str) -> ImageInfo:
    if suffix in PIL_SUFFIXES:
        return _inspect_pil(path)
    if suffix in NIFTI_SUFFIXES:
        return _inspect_nifti(path)
    return _inspect_dicom(path)
