"""Update compression (`[exchange] compression`): a compressed update is an ordinary codec message.

A compressed update is a state dict like any other, so the codec, the store, the transport and the
content hash carry it unchanged, and the committed hash is over the bytes sent. It declares its
encoding in one tensor, `ENCODING_KEY` (the ASCII of `Encoding.declaration()`, e.g. `int8;block=256`),
which the receiver checks against the task's. Tensors that are not floating point (counters, flags)
travel as they are. A floating tensor `name` of the model travels as:

- `fp16` / `bf16`: `name`, cast to float16 / bfloat16 (same shape).
- `int8`: `name` as int8 codes (same shape) and `SCALE_PREFIX + name`, float32, one scale per block of
  `INT8_BLOCK` consecutive elements of the flattened tensor (the last block may be shorter).
  scale = max|x| over the block / 127; code = round-half-to-even(x / scale), in [-127, 127]; a block of
  zeros has scale 0 and codes 0. Decoded: code * scale in float32, so each element is within scale / 2
  (plus one float32 rounding) of the input. -128 is never produced and is refused.
- `topk`: `name` as float32 values, shape [k], and `INDEX_PREFIX + name`, int32, shape [k], strictly
  increasing flat indices, k = ceil(topk_ratio * numel) (at least 1). Every other element decodes to 0.
  What was not sent is the residual that error feedback adds to the next update (`swarmd.train.residual`).

Non-finite input is refused before compression (a float16 overflow too); on receipt `decompressed()`
checks the layout (names, dtypes, shapes, k) at once and each tensor's values (finite non-negative
scales, codes in range, indices in range, sorted, no duplicates) when it is read, raising
`CompressionError` (an `InvalidUpdate`, reason "compression"). Decoding is deterministic IEEE float32
arithmetic, so a leader and an auditor decode the same bits. The decoded view reads one tensor (or one
slice, `read_flat`) at a time: folding a compressed update builds no model-sized temporary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from swarmd.errors import InvalidUpdate

MODES = ("none", "fp16", "bf16", "int8", "topk")
INT8_BLOCK = 256  # elements per int8 scale: 4 bytes of scale per 256 of codes, 1.6 % overhead
INT8_MAX = 127
ENCODING_KEY = "__swarmd_encoding__"
SCALE_PREFIX = "__swarmd_scale__/"
INDEX_PREFIX = "__swarmd_index__/"
_CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}
_FP16_MAX = float(torch.finfo(torch.float16).max)


class CompressionError(InvalidUpdate):
    """A compressed update that does not follow its declared encoding, or input that cannot be compressed."""

    def __init__(self, message: str, *, sender: str = "", hint: str | None = None) -> None:
        super().__init__("compression", message, sender=sender, hint=hint)


class ExchangeLike(Protocol):
    """What an encoding is read from (the task's `[exchange]` settings)."""

    @property
    def compression(self) -> str: ...

    @property
    def topk_ratio(self) -> float: ...


@dataclass(frozen=True)
class Encoding:
    """How updates travel: the task's `[exchange] compression` and `topk_ratio`."""

    mode: str = "none"
    topk_ratio: float = 0.01

    @classmethod
    def of(cls, exchange: ExchangeLike) -> Encoding:
        return cls(exchange.compression, exchange.topk_ratio)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CompressionError(f"unknown compression {self.mode!r}; one of {', '.join(MODES)}")
        if not (math.isfinite(self.topk_ratio) and 0.0 < self.topk_ratio <= 1.0):
            raise CompressionError(f"topk_ratio must be in (0, 1], got {self.topk_ratio}")

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def declaration(self) -> str:
        if self.mode == "int8":
            return f"int8;block={INT8_BLOCK}"
        if self.mode == "topk":
            return f"topk;ratio={self.topk_ratio!r}"
        return self.mode

    def k(self, numel: int) -> int:
        """Elements top-k sends of a tensor of `numel` elements."""
        return 0 if numel == 0 else min(numel, max(1, math.ceil(self.topk_ratio * numel)))

    def max_tensors(self, model_tensors: int) -> int:
        """The most tensors an update of a model of `model_tensors` tensors can list on the wire."""
        return 2 * model_tensors + 1 if self.mode in ("int8", "topk") else model_tensors + self.active


NONE = Encoding()


def _declared(enc: Encoding) -> torch.Tensor:
    return torch.tensor(list(enc.declaration().encode("ascii")), dtype=torch.uint8)


def _blocks(numel: int) -> int:
    return -(-numel // INT8_BLOCK)


def int8_encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in x's shape, float32 scales per block) of a finite floating tensor."""
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    pad = _blocks(n) * INT8_BLOCK - n
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, INT8_BLOCK)
    scales = blocks.abs().amax(dim=1) / INT8_MAX
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.round(blocks / safe[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return codes.view(-1)[:n].reshape(x.shape), scales


def int8_decode(codes: torch.Tensor, scales: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Flat float32 values of `codes` (elements [start, start + numel) of a tensor) given the scales of
    the blocks they fall in, `scales[0]` being the block holding element `start`."""
    flat = codes.reshape(-1).to(torch.float32)
    if start % INT8_BLOCK == 0:  # block-aligned (a whole tensor): broadcast, no per-element index
        full = flat.numel() // INT8_BLOCK * INT8_BLOCK
        flat[:full].view(-1, INT8_BLOCK).mul_(scales[: full // INT8_BLOCK, None])
        flat[full:].mul_(scales[full // INT8_BLOCK : full // INT8_BLOCK + 1])
        return flat
    idx = (torch.arange(flat.numel(), dtype=torch.int64) + start) // INT8_BLOCK - start // INT8_BLOCK
    return flat.mul_(scales[idx])


def topk_select(acc: torch.Tensor, k: int) -> torch.Tensor:
    """The flat indices (int64, ascending) of the k largest |acc|."""
    flat = acc.reshape(-1)
    if k >= flat.numel():
        return torch.arange(flat.numel(), dtype=torch.int64)
    return torch.sort(torch.topk(flat.abs(), k, sorted=False).indices).values


def _check_input(name: str, t: torch.Tensor, enc: Encoding) -> None:
    if not bool(torch.isfinite(t).all()):
        raise InvalidUpdate("nonfinite", f"{name} holds NaN or infinite values: nothing to compress")
    if enc.mode == "fp16" and t.numel() and float(t.abs().max()) > _FP16_MAX:
        raise CompressionError(
            f"{name} holds values beyond float16's range (|x| > {_FP16_MAX:g})",
            hint='use compression = "bf16", which keeps float32\'s range',
        )


def compress(
    state: Mapping[str, torch.Tensor],
    enc: Encoding,
    residual: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(what travels, the new residual) for an update. The residual is top-k's error feedback: float32,
    one per floating tensor, `input + previous residual - sent` (None for the other modes). Refuses
    non-finite input (InvalidUpdate "nonfinite")."""
    if not enc.active:
        return dict(state), None
    out: dict[str, torch.Tensor] = {ENCODING_KEY: _declared(enc)}
    kept: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if not t.is_floating_point():
            out[name] = t
            continue
        _check_input(name, t, enc)
        if enc.mode in _CASTS:
            out[name] = t.to(_CASTS[enc.mode])
        elif enc.mode == "int8":
            out[name], out[SCALE_PREFIX + name] = int8_encode(t)
        else:
            acc = t.detach().to(torch.float32).reshape(-1).clone()
            if residual is not None and name in residual:
                acc += residual[name].reshape(-1)
            idx = topk_select(acc, enc.k(acc.numel()))
            out[name], out[INDEX_PREFIX + name] = acc[idx], idx.to(torch.int32)
            acc[idx] = 0.0
            kept[name] = acc.reshape(t.shape)
    return out, kept if enc.mode == "topk" else None


def layout(
    template: Mapping[str, torch.Tensor], enc: Encoding
) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor a compressed update of a model shaped like `template` holds."""
    if not enc.active:
        return {n: (t.dtype, tuple(t.shape)) for n, t in template.items()}
    declared = _declared(enc)
    out = {ENCODING_KEY: (declared.dtype, tuple(declared.shape))}
    for name, t in template.items():
        shape = tuple(t.shape)
        if not t.is_floating_point():
            out[name] = (t.dtype, shape)
        elif enc.mode in _CASTS:
            out[name] = (_CASTS[enc.mode], shape)
        elif enc.mode == "int8":
            out[name] = (torch.int8, shape)
            out[SCALE_PREFIX + name] = (torch.float32, (_blocks(t.numel()),))
        else:
            k = enc.k(t.numel())
            out[name], out[INDEX_PREFIX + name] = (torch.float32, (k,)), (torch.int32, (k,))
    return out


def _meta(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    meta = getattr(state, "meta", None)
    return meta() if callable(meta) else state


def _slice(state: Mapping[str, torch.Tensor], name: str, start: int, stop: int) -> torch.Tensor:
    read = getattr(state, "read_flat", None)
    if callable(read):
        out: torch.Tensor = read(name, start, stop)
        return out
    return state[name].reshape(-1)[start:stop]


def _short(names: set[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(shown) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


class Decompressed(Mapping[str, torch.Tensor]):
    """A compressed update seen as the model-shaped update it encodes, decoded one tensor (or slice) per
    access and never cached. Built by `decompressed()`, which has checked its layout."""

    def __init__(
        self,
        raw: Mapping[str, torch.Tensor],
        template: Mapping[str, torch.Tensor],
        enc: Encoding,
        sender: str,
    ) -> None:
        self.raw, self.enc, self.sender = raw, enc, sender
        self._specs = {n: (t.dtype, tuple(t.shape)) for n, t in template.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def meta(self) -> dict[str, torch.Tensor]:
        return {n: torch.empty(s, dtype=d, device="meta") for n, (d, s) in self._specs.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        shape = self._specs[name][1]
        return self.read_flat(name, 0, math.prod(shape)).reshape(shape)

    def read_flat(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements [start, stop) of decoded tensor `name`, flattened (what the robust rules read)."""
        dtype, shape = self._specs[name]
        numel = math.prod(shape)
        if not 0 <= start <= stop <= numel:
            raise IndexError(f"{name}: elements [{start}, {stop}) of {numel}")
        if not dtype.is_floating_point:
            return _slice(self.raw, name, start, stop)
        if self.enc.mode in _CASTS:
            return _slice(self.raw, name, start, stop).to(dtype)
        if self.enc.mode == "int8":
            return self._int8(name, start, stop).to(dtype)
        return self._topk(name, numel, start, stop).to(dtype)

    def _fail(self, message: str) -> CompressionError:
        return CompressionError(message, sender=self.sender)

    def _int8(self, name: str, start: int, stop: int) -> torch.Tensor:
        codes = _slice(self.raw, name, start, stop)
        if codes.numel() and int(codes.min()) < -INT8_MAX:
            raise self._fail(f"{name}: int8 code -128 is outside the symmetric range [-127, 127]")
        if start == stop:
            return torch.empty(0, dtype=torch.float32)
        scales = _slice(self.raw, SCALE_PREFIX + name, start // INT8_BLOCK, _blocks(stop))
        if not bool((torch.isfinite(scales) & (scales >= 0)).all()):
            raise self._fail(f"{name}: int8 scales must be finite and >= 0")
        return int8_decode(codes, scales, start)

    def _topk(self, name: str, numel: int, start: int, stop: int) -> torch.Tensor:
        idx = self.raw[INDEX_PREFIX + name].reshape(-1).to(torch.int64)
        if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= numel):
            raise self._fail(f"{name}: top-k index out of range [0, {numel})")
        if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
            raise self._fail(f"{name}: top-k indices must be strictly increasing (sorted, no duplicates)")
        lo, hi = (int(i) for i in torch.searchsorted(idx, torch.tensor([start, stop])))
        out = torch.zeros(stop - start, dtype=torch.float32)
        out[idx[lo:hi] - start] = _slice(self.raw, name, lo, hi)
        return out


def decompressed(
    raw: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor], enc: Encoding, sender: str = ""
) -> Mapping[str, torch.Tensor]:
    """The update `raw` encodes, for a model shaped like `template` (`raw` itself when nothing is
    compressed). Checks the declared encoding and the layout now; raises CompressionError."""
    if not enc.active:
        return raw
    fail = CompressionError
    shapes = _meta(raw)
    if ENCODING_KEY in shapes:
        _check_declaration(raw, shapes[ENCODING_KEY], enc, sender)
    want = layout(template, enc)
    missing, extra = set(want) - set(shapes), set(shapes) - set(want)
    if missing or extra:
        what = ([f"missing {_short(missing)}"] if missing else []) + (
            [f"unexpected {_short(extra)}"] if extra else []
        )
        raise fail(f"not a {enc.mode} update of this model: " + "; ".join(what), sender=sender)
    for name, (dtype, shape) in want.items():
        got = shapes[name]
        if got.dtype != dtype or tuple(got.shape) != shape:
            raise fail(
                f"{name}: {got.dtype} {tuple(got.shape)}, the {enc.mode} encoding wants {dtype} {shape}",
                sender=sender,
            )
    return Decompressed(raw, template, enc, sender)


def _check_declaration(
    raw: Mapping[str, torch.Tensor], meta: torch.Tensor, enc: Encoding, sender: str
) -> None:
    """The update declares the task's encoding (checked before its layout, for the clearer message)."""
    want = enc.declaration().encode("ascii")
    if meta.dtype != torch.uint8 or meta.dim() != 1 or meta.numel() > 256:
        raise CompressionError(f"{ENCODING_KEY} must be a short uint8 string", sender=sender)
    declared = bytes(raw[ENCODING_KEY].tolist())
    if declared != want:
        raise CompressionError(
            f"declares encoding {declared[:64]!r}, the task says {want.decode()!r}", sender=sender
        )


def wire_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data an update puts on the wire (the manifest aside)."""
    return sum(t.numel() * t.element_size() for t in _meta(state).values())
