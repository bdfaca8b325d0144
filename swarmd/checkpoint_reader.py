"""A stored checkpoint read one tensor at a time: `StoredState`, a read-only mapping whose tensors are
read from the file when asked for and not kept.

The leader merges its stored updates this way (`Exchange.fold`): fedavg reads one tensor of every
update at a time, at the merge, and holds no update; a robust rule reads slices of one tensor at a
time (`read_flat`), again and again, and holds no update; and no file is memory-mapped
(mapped pages would count in the leader's RSS as long as the map lives). The file's header is
parsed and bounds-checked here (safetensors' layout: an 8-byte little-endian header length, a JSON
header of dtype, shape and byte offsets per tensor, then the data); nothing is ever unpickled. The
content hash is verified by `open_verified`, in one streaming pass, before any tensor is handed out,
unless the caller wrote that very file itself (`FileId`) from a state whose hash it knew.
"""

from __future__ import annotations

import json
import math
import os
import struct
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from swarmd.codec import ContentHasher, Manifest, TensorSpec, hash_hex
from swarmd.errors import CheckpointError, CodecError

_DTYPES = {
    "F32": ("float32", torch.float32),
    "F16": ("float16", torch.float16),
    "BF16": ("bfloat16", torch.bfloat16),
    "F64": ("float64", torch.float64),
    "I8": ("int8", torch.int8),
    "U8": ("uint8", torch.uint8),
    "I16": ("int16", torch.int16),
    "I32": ("int32", torch.int32),
    "I64": ("int64", torch.int64),
    "BOOL": ("bool", torch.bool),
}
_NAMES = {t: name for name, t in _DTYPES.values()}
_ITEM_SIZES = {t: torch.empty((), dtype=t).element_size() for _, t in _DTYPES.values()}
_MAX_HEADER = 100 << 20
_CHUNK = 16 << 20  # bytes hashed at a time


class CorruptStoredState(CheckpointError):
    """The file's header or size is not a checkpoint's, or its bytes do not hash to its name."""


@dataclass(frozen=True)
class FileId:
    """Which file a path held when it was written: a file replaced or rewritten since has another."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int


class StoredState(Mapping[str, torch.Tensor]):
    """The tensors of one checkpoint file, each read on access (a fresh tensor every time)."""

    def __init__(self, path: Path, entries: dict[str, _Entry], manifest: Manifest) -> None:
        self.path = path
        self._entries = entries
        self.manifest = manifest
        self._fd: int | None = None

    def _read(self, offset: int, out: torch.Tensor) -> torch.Tensor:
        """Fill `out` with the file's bytes from `offset`. The file is opened once, on the first read, and
        closed when this object goes: a merge reads every tensor of every update, and opening the file
        for each (2,181 times for three DenseNet121 updates) took a fifth of the leader's merge. From the
        first read on, every read is of that one file, even if another is put in its place meanwhile."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            weakref.finalize(self, os.close, self._fd)
        view = out.reshape(-1).view(torch.uint8).numpy().data.cast("B")
        done = 0
        while done < len(view):  # a regular file reads short only at its end (or past 2 GiB at once)
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:
                raise CorruptStoredState(f"checkpoint {self.path} is truncated")
            done += got
        return out

    def __getitem__(self, name: str) -> torch.Tensor:
        e = self._entries[name]
        return self._read(e.start, torch.empty(e.shape, dtype=e.dtype))

    def read_flat(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements [start, stop) of tensor `name`, flattened, read from the file: what the robust merge
        rules read, a slice of one tensor at a time, so no update is held whole."""
        e = self._entries[name]
        count = math.prod(e.shape)
        if not 0 <= start <= stop <= count:
            raise IndexError(f"{name}: elements [{start}, {stop}) of {count}")
        out = torch.empty(stop - start, dtype=e.dtype)
        return self._read(e.start + start * out.element_size(), out)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def meta(self) -> dict[str, torch.Tensor]:
        """Shape-and-dtype-only (meta) tensors: what a structure check reads, without reading data."""
        return {n: torch.empty(e.shape, dtype=e.dtype, device="meta") for n, e in self._entries.items()}


class HeldState(Mapping[str, torch.Tensor]):
    """A model its owner holds in memory anyway (the store's recent models), read as a `StoredState` is:
    a merge rule may keep it by reference until its merge instead of folding or copying it at once."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._state = state

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._state[name]

    def read_flat(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._state[name].reshape(-1)[start:stop]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)


def open_verified(path: Path, expected: bytes, written: FileId | None = None) -> StoredState:
    """The checkpoint at `path`, once its bytes hash to `expected` (read in chunks, nothing kept).

    `written`: the file the caller wrote at `path` from a state hashing to `expected`. While the path
    still holds that file, its header is checked but its bytes are not hashed again: a leader's merge
    opens every update it stored seconds before (the transport hashed each as it came in), and at
    N = 8 hashing them again took a quarter of a second of its critical path.

    Raises CheckpointError when the file is missing, CorruptStoredState when it is not a checkpoint
    or holds other bytes than `expected` names."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            entries = _header(f, st.st_size, path)
            manifest = Manifest(
                tuple(TensorSpec(n, _name(e.dtype), e.shape, e.nbytes) for n, e in sorted(entries.items()))
            )
            if written is not None and FileId.of(st) == written:
                return StoredState(path, entries, manifest)
            got = _file_hash(f, manifest, entries, path)
            if got != expected:  # a model named before protocol 4 (codec.hash_against): read it again
                v1 = _file_hash(f, manifest, entries, path, legacy=True)
                got = v1 if v1 == expected else got
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    except CodecError as exc:
        raise CorruptStoredState(f"checkpoint {path} is not a valid model: {exc}") from exc
    if got != expected:
        raise CorruptStoredState(
            f"checkpoint {path} does not match its hash: expected {hash_hex(expected)}, got {hash_hex(got)}",
            hint="the file was modified or corrupted; fetch the model again from a peer",
        )
    return StoredState(path, entries, manifest)


def _file_hash(
    f: BinaryIO, manifest: Manifest, entries: dict[str, _Entry], path: Path, *, legacy: bool = False
) -> bytes:
    hasher = ContentHasher(manifest, legacy=legacy)
    for spec in manifest.tensors:
        f.seek(entries[spec.name].start)
        left = spec.nbytes
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise CorruptStoredState(f"checkpoint {path} is truncated")
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.digest()


def _name(dtype: torch.dtype) -> str:
    return _NAMES[dtype]


def _header(f: BinaryIO, size: int, path: Path) -> dict[str, _Entry]:
    raw = f.read(8)
    if len(raw) != 8:
        raise CorruptStoredState(f"checkpoint {path} is truncated")
    (n,) = struct.unpack("<Q", raw)
    if n > min(_MAX_HEADER, size - 8):
        raise CorruptStoredState(f"checkpoint {path} has a header of {n} bytes in a {size}-byte file")
    try:
        doc = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptStoredState(f"checkpoint {path} has an unreadable header: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptStoredState(f"checkpoint {path} has an unreadable header")
    entries = {}
    for name, spec in doc.items():
        if name == "__metadata__":
            continue
        try:
            _, dtype = _DTYPES[spec["dtype"]]
            shape = tuple(int(d) for d in spec["shape"])
            begin, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStoredState(f"checkpoint {path}: bad entry for {name!r} ({exc})") from None
        nbytes = math.prod(shape) * _ITEM_SIZES[dtype]
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= size - 8 - n or end - begin != nbytes:
            raise CorruptStoredState(f"checkpoint {path}: entry {name!r} does not fit the file")
        entries[str(name)] = _Entry(dtype, shape, 8 + n + begin, nbytes)
    return entries
