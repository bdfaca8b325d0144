"""Tensors <-> bytes: a msgpack manifest plus raw frames, zero-copy, and the model content hash.

A state dict travels as a `Manifest` (name, dtype, shape, nbytes of every tensor, sorted by name)
and one raw frame per tensor, in manifest order. Encoding copies no tensor data: the frames are
memoryviews of the (contiguous, CPU) tensors themselves. Decoding returns tensors that view the
received buffers when they are writable, or copies exactly once into one preallocated buffer.

`content_hash` is the ONE function that names a model: on-chain commitments, checkpoint file
names and the verification of every model received from a peer all use it. It returns a `Digest`,
32 bytes that stay bytes everywhere inside swarmd and become `0x` hex only at the edges (journal
file, logs, status, CLI).

    content_hash = BLAKE3(b"swarmd-model-v2" + manifest.canonical_bytes() + tensor bytes in manifest order)

BLAKE3 since protocol 4, not sha256: every update and merged model is hashed several times a round, and
one BLAKE3 stream runs at 5.2-7.3 GB/s on a core here, sha256 at 1.2-1.7. Models named before then keep
their names on chain, so where a hash is checked against a name that old (the store, a fetched model,
an audit) `hash_against` also accepts the v1 hash, sha256(b"swarmd-model-v1" + the same bytes).

Bytes are little-endian, as in memory on every platform torch supports here. Never pickle, never
`torch.load`: bytes from a peer are only ever interpreted through a validated manifest.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import blake3
import msgpack
import torch

from swarmd.errors import CodecError

HASH_DOMAIN = b"swarmd-model-v2"
LEGACY_DOMAIN = b"swarmd-model-v1"  # sha256: the names of models hashed before protocol 4
HASH_SIZE = 32

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
_NAME_OF: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
ITEMSIZE: dict[str, int] = {k: torch.empty((), dtype=v).element_size() for k, v in DTYPES.items()}

# Bounds on what a manifest from a peer may describe; far above any real model, far below a bomb.
MAX_TENSORS = 100_000
MAX_NAME_LEN = 1024
MAX_NDIM = 32
MAX_NBYTES = 1 << 40

_WIRE_KEYS = ("name", "dtype", "shape", "nbytes")

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "nbytes": self.nbytes}

    @classmethod
    def from_wire(cls, obj: object) -> TensorSpec:
        if not isinstance(obj, dict) or tuple(obj.keys()) != _WIRE_KEYS:
            raise CodecError(f"tensor spec must be a map with keys {_WIRE_KEYS} in that order")
        name, dtype, shape, nbytes = (obj[k] for k in _WIRE_KEYS)
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN:
            raise CodecError("tensor name must be a non-empty string of at most 1024 characters")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise CodecError(f"tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list | tuple) or len(shape) > MAX_NDIM:
            raise CodecError(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} dims")
        if not all(_is_int(d) and 0 <= d <= MAX_NBYTES for d in shape):
            raise CodecError(f"tensor {name!r}: shape entries must be non-negative integers")
        spec = cls(name, dtype, tuple(shape), nbytes)
        if not _is_int(nbytes) or nbytes != spec.expected_nbytes():
            raise CodecError(f"tensor {name!r}: nbytes {nbytes!r} disagrees with dtype and shape")
        return spec

    def expected_nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


def _is_int(x: object) -> bool:
    # bool is an int subclass in Python; msgpack gives True/False for booleans, never for counts.
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Manifest:
    tensors: tuple[TensorSpec, ...]

    @property
    def total_nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def to_wire(self) -> list[dict[str, Any]]:
        return [t.to_wire() for t in self.tensors]

    @classmethod
    def from_wire(cls, obj: object) -> Manifest:
        """Validate a manifest received from a peer; raise CodecError on anything off."""
        if not isinstance(obj, list | tuple):
            raise CodecError("manifest must be a list of tensor specs")
        if len(obj) > MAX_TENSORS:
            raise CodecError(f"manifest lists {len(obj)} tensors, more than {MAX_TENSORS}")
        specs = tuple(TensorSpec.from_wire(o) for o in obj)
        names = [s.name for s in specs]
        # Strictly increasing names: canonical order and no duplicates in one check.
        if any(a >= b for a, b in itertools.pairwise(names)):
            raise CodecError("manifest names must be unique and sorted")
        manifest = cls(specs)
        if manifest.total_nbytes > MAX_NBYTES:
            raise CodecError("manifest describes more than 1 TiB")
        return manifest

    def canonical_bytes(self) -> bytes:
        """Deterministic msgpack of the wire form: the bytes the content hash covers."""
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    def offsets(self) -> list[int]:
        """Byte offset of each tensor in the concatenated payload, in manifest order."""
        out, pos = [], 0
        for t in self.tensors:
            out.append(pos)
            pos += t.nbytes
        return out


def _check_state(state: Mapping[str, torch.Tensor]) -> None:
    for name, t in state.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN:
            raise CodecError(f"state dict key {name!r} must be a non-empty string")
        if not isinstance(t, torch.Tensor):
            raise CodecError(f"state dict entry {name!r} is a {type(t).__name__}, not a tensor")
        if t.dtype not in _NAME_OF:
            raise CodecError(
                f"tensor {name!r}: unsupported dtype {t.dtype}", hint=f"use one of {list(DTYPES)}"
            )
        if t.layout != torch.strided or t.device.type == "meta":
            raise CodecError(
                f"tensor {name!r}: only dense tensors with data can be encoded ({t.layout}, {t.device})"
            )


def manifest_of(state: Mapping[str, torch.Tensor]) -> Manifest:
    """The canonical manifest of a state dict: tensors sorted by name."""
    _check_state(state)
    specs = []
    for name in sorted(state):
        t = state[name]
        specs.append(TensorSpec(name, _NAME_OF[t.dtype], tuple(t.shape), t.numel() * t.element_size()))
    return Manifest(tuple(specs))


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """A flat byte view of a tensor; copies only if it is not already a contiguous CPU tensor."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    # reshape(-1) lets 0-dim tensors take a dtype view; uint8 sidesteps numpy's lack of bfloat16.
    return t.reshape(-1).view(torch.uint8).numpy().data.cast("B")


def encode(state: Mapping[str, torch.Tensor]) -> tuple[Manifest, list[memoryview]]:
    """Manifest plus one zero-copy frame per tensor, in manifest order."""
    manifest = manifest_of(state)
    return manifest, [tensor_bytes(state[t.name]) for t in manifest.tensors]


def _nbytes(buf: Buffer) -> int:
    return memoryview(buf).nbytes


def _view(buf: Buffer, offset: int, spec: TensorSpec) -> torch.Tensor:
    """A tensor over `buf[offset:offset+nbytes]`; cloned only when misaligned for its dtype."""
    dtype = DTYPES[spec.dtype]
    if spec.nbytes == 0:
        return torch.empty(spec.shape, dtype=dtype)
    flat = torch.frombuffer(buf, dtype=torch.uint8, count=spec.nbytes, offset=offset)
    if flat.data_ptr() % ITEMSIZE[spec.dtype]:
        flat = flat.clone()  # torch kernels may assume natural alignment
    return flat.view(dtype).view(spec.shape)


def _writable(buf: Buffer) -> bool:
    return not memoryview(buf).readonly


def decode(manifest: Manifest, frames: Sequence[Buffer]) -> dict[str, torch.Tensor]:
    """Tensors from frames: either one frame per tensor, or one buffer with every tensor concatenated.

    Writable buffers are viewed in place (the tensors share their memory); read-only ones are copied
    once into a single preallocated buffer. Sizes that disagree with the manifest raise CodecError.
    """
    specs = manifest.tensors
    if len(frames) == len(specs) and all(_nbytes(f) == s.nbytes for f, s in zip(frames, specs, strict=True)):
        return _decode_each(specs, frames)
    if len(frames) == 1:
        size = _nbytes(frames[0])
        if size != manifest.total_nbytes:
            raise CodecError(f"payload holds {size} bytes, manifest says {manifest.total_nbytes}")
        return decode_flat(manifest, frames[0])
    got = [_nbytes(f) for f in frames[:8]]
    raise CodecError(f"{len(frames)} frames (sizes {got}...) do not match a manifest of {len(specs)} tensors")


def _decode_each(specs: Sequence[TensorSpec], frames: Sequence[Buffer]) -> dict[str, torch.Tensor]:
    if not all(_writable(f) for f in frames):
        flat = torch.empty(sum(s.nbytes for s in specs), dtype=torch.uint8)
        out = flat.numpy().data.cast("B")
        pos = 0
        for f, s in zip(frames, specs, strict=True):
            out[pos : pos + s.nbytes] = memoryview(f).cast("B")
            pos += s.nbytes
        return decode_flat(Manifest(tuple(specs)), out)
    return {s.name: _view(f, 0, s) for f, s in zip(frames, specs, strict=True)}


def decode_flat(manifest: Manifest, buffer: Buffer) -> dict[str, torch.Tensor]:
    """Tensors viewing one buffer that holds every tensor's bytes back to back in manifest order."""
    size = _nbytes(buffer)
    if size != manifest.total_nbytes:
        raise CodecError(f"payload holds {size} bytes, manifest says {manifest.total_nbytes}")
    if not _writable(buffer):
        copy = torch.empty(size, dtype=torch.uint8)
        mv = copy.numpy().data.cast("B")
        mv[:] = memoryview(buffer).cast("B")
        buffer = mv
    return {
        s.name: _view(buffer, off, s) for s, off in zip(manifest.tensors, manifest.offsets(), strict=True)
    }


class _Hash(Protocol):
    def update(self, data: Buffer, /) -> object: ...
    def digest(self) -> bytes: ...


class ContentHasher:
    """Incremental content hash: feed the tensor bytes in manifest order, in chunks of any size.
    `legacy`: the v1 (sha256) hash instead. Both release the GIL on large inputs."""

    def __init__(self, manifest: Manifest, *, legacy: bool = False) -> None:
        self._h: _Hash = hashlib.sha256(LEGACY_DOMAIN) if legacy else blake3.blake3(HASH_DOMAIN)
        self._h.update(manifest.canonical_bytes())
        self._expected = manifest.total_nbytes
        self._seen = 0

    @property
    def seen(self) -> int:
        return self._seen

    def update(self, data: Buffer) -> None:
        n = _nbytes(data)
        if self._seen + n > self._expected:
            raise CodecError(f"more tensor bytes than the manifest's {self._expected}")
        self._h.update(data)
        self._seen += n

    def digest(self) -> Digest:
        if self._seen != self._expected:
            raise CodecError(f"hashed {self._seen} tensor bytes, manifest says {self._expected}")
        return Digest(self._h.digest())


def hash_frames(manifest: Manifest, frames: Sequence[Buffer], *, legacy: bool = False) -> Digest:
    """Content hash of an encoded payload (frames per tensor, or one concatenated buffer)."""
    h = ContentHasher(manifest, legacy=legacy)
    for f in frames:
        h.update(f)
    return h.digest()


def content_hash(state: Mapping[str, torch.Tensor], *, legacy: bool = False) -> Digest:
    """The 32-byte content hash of a state dict (see the module docstring)."""
    manifest, frames = encode(state)
    return hash_frames(manifest, frames, legacy=legacy)


def digest_against(manifest: Manifest, frames: Sequence[Buffer], digest: bytes, name: bytes | None) -> bytes:
    """The payload's hash to compare with `name`, given its content hash `digest`: its v1 hash where
    that is `name` (a model named before protocol 4), else `digest`. The v1 hash is computed only when
    `digest` is not `name`."""
    if name is not None and digest != name:
        v1 = hash_frames(manifest, frames, legacy=True)
        if v1 == name:
            return v1
    return digest


def hash_against(state: Mapping[str, torch.Tensor], name: bytes | None) -> Digest:
    """The state's hash to compare with `name` (see `digest_against`)."""
    manifest, frames = encode(state)
    return Digest(digest_against(manifest, frames, hash_frames(manifest, frames), name))


def first_nonfinite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating or complex tensor holding a NaN or an infinity, or None.

    One fused pass first: a finite sum of absolute values proves every element finite (a NaN or an
    infinity makes it NaN or infinite). That costs about a fifth of `isfinite` tensor by tensor on
    DenseNet121's 727 tensors, which the daemon runs several times a round. Only a sum that is not finite
    (a bad value, or finite values whose sum overflows) is checked tensor by tensor, so the verdict is
    exact either way."""
    checked = {n: t for n, t in state.items() if (t.is_floating_point() or t.is_complex()) and t.numel()}
    if not checked:
        return None
    total = torch.nn.utils.get_total_norm(list(checked.values()), norm_type=1.0, foreach=True)
    if bool(torch.isfinite(total)):
        return None
    return next((n for n, t in checked.items() if not bool(torch.isfinite(t).all())), None)


class Digest(bytes):
    """A 32-byte content hash. Equal to (and hashes like) the plain bytes it holds, so it mixes with
    hashes read from the chain; `str()` and `hex0x()` render it as `0x` + 64 hex digits."""

    __slots__ = ()

    def __new__(cls, value: bytes | bytearray) -> Digest:
        if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
            raise CodecError(f"a content hash is {HASH_SIZE} bytes")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, s: str) -> Digest:
        """`0x` + 64 hex digits (the `0x` is optional); raises CodecError otherwise."""
        return cls(parse_hash(s))

    def hex0x(self) -> str:
        return "0x" + self.hex()

    def short(self) -> str:
        """The first 16 hex digits, for log lines."""
        return "0x" + self.hex()[:16]

    def __str__(self) -> str:
        return self.hex0x()

    def __repr__(self) -> str:
        return f"Digest({self.hex0x()!r})"


def hash_hex(h: bytes) -> str:
    return Digest(h).hex0x()


def parse_hash(s: str) -> bytes:
    """Parse `0x` + 64 hex digits (the `0x` is optional) into 32 bytes."""
    if not isinstance(s, str):
        raise CodecError("a content hash must be given as a hex string")
    body = s[2:] if s[:2] in ("0x", "0X") else s
    if len(body) != 2 * HASH_SIZE:
        raise CodecError(f"a content hash is {2 * HASH_SIZE} hex digits, got {len(body)}: {s[:80]!r}")
    try:
        out = bytes.fromhex(body)
    except ValueError as exc:
        raise CodecError(f"not a hex content hash: {s[:80]!r}") from exc
    if len(out) != HASH_SIZE:  # fromhex skips whitespace
        raise CodecError(f"not a hex content hash: {s[:80]!r}")
    return out
