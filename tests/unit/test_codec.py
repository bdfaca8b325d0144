"""Codec: round trips for every dtype, zero-copy claims, strict manifest validation, the content hash."""

from __future__ import annotations

import hashlib

import blake3
import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.codec import (
    DTYPES,
    HASH_DOMAIN,
    LEGACY_DOMAIN,
    ContentHasher,
    Digest,
    Manifest,
    TensorSpec,
    content_hash,
    decode,
    decode_flat,
    digest_against,
    encode,
    first_nonfinite,
    hash_against,
    hash_frames,
    hash_hex,
    manifest_of,
    parse_hash,
)
from swarmd.errors import CodecError, WireError


def _sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    # Compare bytes, not values: NaN != NaN, and bit-exactness is the contract.
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and a[k].reshape(-1).view(torch.uint8).tolist() == b[k].reshape(-1).view(torch.uint8).tolist()
        for k in a
    )


@pytest.mark.parametrize("name", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (2, 0, 3), (2, 3, 4, 5)])
def test_round_trip_every_dtype(name: str, shape: tuple[int, ...]) -> None:
    state = {"w": _sample(DTYPES[name], shape), "b": _sample(DTYPES[name], (3,), seed=1)}
    manifest, frames = encode(state)
    assert manifest.names == ("b", "w")
    assert manifest.tensors[1] == TensorSpec("w", name, shape, state["w"].numel() * state["w"].element_size())
    assert _same(decode(manifest, frames), state)
    flat = bytearray(b"".join(bytes(f) for f in frames))
    assert _same(decode(manifest, [flat]), state)
    assert _same(decode(manifest, [bytes(flat)]), state)


def test_encode_is_zero_copy_and_decode_views_writable_buffers() -> None:
    w = torch.randn(1000)
    _, frames = encode({"w": w})
    w[0] = 42.0
    assert bytes(frames[0][:4]) == w[:1].numpy().tobytes()  # the frame is the tensor's memory
    buf = bytearray(bytes(frames[0]))
    out = decode_flat(manifest_of({"w": w}), buf)
    buf[0:4] = torch.tensor([7.0]).numpy().tobytes()
    assert out["w"][0].item() == 7.0  # the tensor is the buffer's memory


def test_decode_copies_read_only_frames_once_and_they_stay_valid() -> None:
    state = {"a": torch.arange(10, dtype=torch.int64), "b": torch.ones(3, 3)}
    manifest, frames = encode(state)
    out = decode(manifest, [bytes(f) for f in frames])
    assert _same(out, state)
    out["a"] += 1  # a copy: writable, and independent from the input bytes
    assert out["a"][0].item() == 1 and state["a"][0].item() == 0


def test_noncontiguous_and_misaligned_inputs() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    state = {"a": torch.ones(3, dtype=torch.int8), "b": torch.arange(5, dtype=torch.int64), "t": t}
    manifest, frames = encode(state)
    flat = bytearray(b"".join(bytes(f) for f in frames))  # "b" lands at offset 3: misaligned for int64
    out = decode_flat(manifest, flat)
    assert _same(out, {k: v.contiguous() for k, v in state.items()})
    assert out["b"].data_ptr() % 8 == 0


def test_state_validation() -> None:
    with pytest.raises(CodecError, match="unsupported dtype"):
        manifest_of({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(CodecError, match="not a tensor"):
        manifest_of({"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(CodecError):
        manifest_of({"": torch.zeros(1)})
    with pytest.raises(CodecError, match="dense"):
        manifest_of({"s": torch.eye(3).to_sparse()})
    with pytest.raises(CodecError, match="dense"):
        manifest_of({"m": torch.empty(3, device="meta")})


def test_sizes_must_match_the_manifest() -> None:
    manifest, frames = encode({"a": torch.zeros(4), "b": torch.zeros(2)})
    with pytest.raises(CodecError, match="payload holds"):
        decode(manifest, [bytes(24 - 1)])
    with pytest.raises(CodecError, match="do not match"):
        decode(manifest, [frames[0], bytes(7)])
    with pytest.raises(CodecError):
        decode(manifest, [frames[0], frames[1], frames[1]])
    assert issubclass(CodecError, WireError)


GOOD = {"name": "w", "dtype": "float32", "shape": [2, 3], "nbytes": 24}


@pytest.mark.parametrize(
    "bad",
    [
        "not a list",
        [{"name": "w"}],
        [{**GOOD, "dtype": "complex64"}],
        [{**GOOD, "dtype": 3}],
        [{**GOOD, "nbytes": 25}],
        [{**GOOD, "nbytes": True}],
        [{**GOOD, "shape": [2, -3]}],
        [{**GOOD, "shape": [2, 3.0]}],
        [{**GOOD, "shape": "23"}],
        [{**GOOD, "shape": [1] * 33, "nbytes": 4}],
        [{**GOOD, "name": ""}],
        [{**GOOD, "name": b"w"}],
        [{**GOOD, "extra": 1}],
        [{"dtype": "float32", "name": "w", "shape": [2, 3], "nbytes": 24}],  # key order is canonical
        [GOOD, GOOD],  # duplicate
        [{**GOOD, "name": "z"}, GOOD],  # unsorted
        [{**GOOD, "shape": [1 << 30, 1 << 30], "nbytes": 4 << 60}],  # over 1 TiB
    ],
)
def test_manifest_from_wire_rejects(bad: object) -> None:
    with pytest.raises(CodecError):
        Manifest.from_wire(bad)


def test_manifest_wire_round_trip_and_canonical_bytes() -> None:
    manifest = manifest_of(
        {"z": torch.zeros(2, 2, dtype=torch.bfloat16), "a": torch.zeros((), dtype=torch.bool)}
    )
    wire = msgpack.unpackb(manifest.canonical_bytes())
    assert Manifest.from_wire(wire) == manifest
    assert manifest.canonical_bytes() == Manifest.from_wire(wire).canonical_bytes()
    assert manifest.total_nbytes == 9


def test_content_hash_definition_and_sensitivity() -> None:
    state = {"b": torch.arange(4, dtype=torch.int16), "a": torch.ones(2)}
    manifest, frames = encode(state)
    expected = blake3.blake3(
        HASH_DOMAIN + manifest.canonical_bytes() + b"".join(bytes(f) for f in frames)
    ).digest()
    assert HASH_DOMAIN == b"swarmd-model-v2"
    assert content_hash(state) == expected
    assert content_hash(dict(reversed(state.items()))) == expected  # key order does not matter
    assert content_hash({**state, "a": torch.tensor([1.0, 1.0000001])}) != expected
    assert content_hash({**state, "a": torch.ones(1, 2)}) != expected  # shape is covered
    assert content_hash({**state, "b": torch.arange(4, dtype=torch.uint8)}) != expected  # dtype too


def test_the_v1_hash_is_sha256_over_the_same_bytes() -> None:
    state = {"b": torch.arange(4, dtype=torch.int16), "a": torch.ones(2)}
    manifest, frames = encode(state)
    v1 = hashlib.sha256(LEGACY_DOMAIN + manifest.canonical_bytes() + b"".join(bytes(f) for f in frames))
    assert LEGACY_DOMAIN == b"swarmd-model-v1"
    assert content_hash(state, legacy=True) == hash_frames(manifest, frames, legacy=True) == v1.digest()


def test_a_state_is_checked_against_its_name_in_either_hash() -> None:
    state = {"w": torch.randn(100)}
    current, v1 = content_hash(state), content_hash(state, legacy=True)
    assert hash_against(state, current) == current
    assert hash_against(state, v1) == v1  # a model named before protocol 4
    other = content_hash({"w": torch.randn(100)})
    assert hash_against(state, other) == current != other  # neither: the current hash, for the message
    assert hash_against(state, None) == current
    manifest, frames = encode(state)
    assert digest_against(manifest, frames, current, v1) == v1
    assert digest_against(manifest, frames, current, other) == current


def test_incremental_hasher_counts_bytes() -> None:
    state = {"w": torch.randn(100)}
    manifest, frames = encode(state)
    h = ContentHasher(manifest)
    data = bytes(frames[0])
    for i in range(0, len(data), 7):
        h.update(data[i : i + 7])
    assert h.digest() == content_hash(state)
    short = ContentHasher(manifest)
    short.update(data[:-1])
    with pytest.raises(CodecError):
        short.digest()
    with pytest.raises(CodecError):
        ContentHasher(manifest).update(data + b"x")


def test_hash_hex_and_parse() -> None:
    h = content_hash({"w": torch.zeros(1)})
    s = hash_hex(h)
    assert s.startswith("0x") and len(s) == 66
    assert parse_hash(s) == h and parse_hash(s[2:]) == h and parse_hash(s.upper().replace("0X", "0x")) == h
    for bad in ["0x12", "0x" + "g" * 64, "0x" + "a " * 32, 5, "0x" + "a" * 66]:
        with pytest.raises(CodecError):
            parse_hash(bad)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        hash_hex(b"short")


def test_a_digest_is_its_bytes_and_renders_as_hex_only_when_asked() -> None:
    h = content_hash({"w": torch.zeros(1)})
    assert isinstance(h, Digest)
    plain = bytes(h)
    assert h == plain and hash(h) == hash(plain) and plain in {h}  # mixes with hashes read from the chain
    assert str(h) == f"{h}" == h.hex0x() == hash_hex(h) and h.short() == h.hex0x()[:18]
    assert Digest.parse(h.hex0x()) == h and Digest.parse(h.hex()) == h
    for bad in [b"short", b"x" * 33, "0x" + "a" * 64]:
        with pytest.raises(CodecError):
            Digest(bad)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        Digest.parse("0x12")


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_shapes = st.lists(st.integers(0, 5), max_size=4).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        _names, st.tuples(st.sampled_from(sorted(DTYPES)), _shapes, st.integers(0, 99)), max_size=6
    )
)
def test_property_round_trip_and_hash(spec: dict[str, tuple[str, tuple[int, ...], int]]) -> None:
    state = {k: _sample(DTYPES[d], shape, seed) for k, (d, shape, seed) in spec.items()}
    manifest, frames = encode(state)
    assert _same(decode(manifest, frames), state)
    flat = bytearray(b"".join(bytes(f) for f in frames))
    assert _same(decode_flat(manifest, flat), state)
    assert hash_frames(manifest, [flat]) == content_hash(state)
    assert Manifest.from_wire(msgpack.unpackb(manifest.canonical_bytes())) == manifest


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=5),
    )
)
def test_property_from_wire_never_crashes(obj: object) -> None:
    # Either a valid manifest or a CodecError: never another exception type.
    try:
        result = Manifest.from_wire(obj)
    except CodecError:
        return
    assert isinstance(result, Manifest) and len(result.tensors) == len(obj)  # type: ignore[arg-type]


def test_first_nonfinite_names_the_first_bad_tensor_and_only_a_bad_one() -> None:
    fine = {
        "w": torch.randn(4, 3),
        "steps": torch.tensor(7),  # integers and flags hold no NaN
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0),
        "half": torch.ones(8, dtype=torch.float16),
    }
    assert first_nonfinite(fine) is None
    assert first_nonfinite({}) is None and first_nonfinite({"n": torch.tensor([3])}) is None
    # finite values whose sum overflows: the fused pass says "not finite", the exact check clears them
    assert first_nonfinite({"big": torch.full((4,), 3e38), "h": torch.full((2000,), 100.0).half()}) is None
    for bad in (float("nan"), float("inf"), float("-inf")):
        state = {**fine, "b": torch.tensor([1.0, bad]), "c": torch.tensor([bad])}
        assert first_nonfinite(state) == "b"
    assert first_nonfinite({"bf": torch.tensor([float("nan")], dtype=torch.bfloat16)}) == "bf"
    assert first_nonfinite({"z": torch.tensor([1 + 1j, complex("nan")])}) == "z"
