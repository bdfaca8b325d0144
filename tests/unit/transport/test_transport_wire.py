"""Transport wire units: message round trips and validation, chunking, the receiver's stream checks."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd import codec
from swarmd.transport import messages as m
from swarmd.transport.stream import Inbound, Outbound, iter_chunks, new_key, new_sid

V = m.PROTOCOL_VERSION

MANIFEST = codec.manifest_of({"a": torch.zeros(3), "b": torch.zeros(2, 2, dtype=torch.int64)})
SAMPLES = [
    m.Ping(1, 2.5),
    m.Pong(1, 2.5),
    m.Announce(3, 4, bytes(32)),
    m.UpdateOffer(
        5, 6, 7, bytes(range(32)), MANIFEST, {"samples": 12, "loss": 0.5, "site": "a", "diff": True}
    ),
    m.Fetch(8, bytes(32), 1 << 30, None),
    m.Fetch(8, bytes(32), 1 << 30, bytes(32)),
    m.Serve(9, bytes(16), MANIFEST, 7701),
    m.Grant(10, bytes(16), 4, bytes(32), 7701),
    m.Grant(10, bytes(16), 1),
    m.Chunk(bytes(16), 11),
    m.Cancel(bytes(16), "sender gave up"),
    m.Reply(12, False, m.Refusal.TOO_LARGE, "detail"),
    m.Reply(13, True),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: type(x).__name__)
def test_every_kind_round_trips(msg: m.Message) -> None:
    assert m.decode(m.encode(msg)) == msg


def test_a_refusal_decodes_as_its_enum_member_and_a_broken_stream_label_maps_to_one() -> None:
    reply = m.decode(m.encode(m.Reply(1, False, m.Refusal.NOT_READY)))
    assert isinstance(reply, m.Reply) and reply.reason is m.Refusal.NOT_READY
    assert m.as_refusal("stalled") is m.Refusal.STALLED
    assert m.as_refusal("over_credit") is m.Refusal.BAD_STREAM


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"v": V, "kind": "ping", "req": 1, "sent": float("nan")}, "bad_field"),
        ({"v": V, "kind": "ping", "req": True, "sent": 0.0}, "bad_field"),
        ({"v": V, "kind": "ping", "req": 1, "sent": 0.0, "extra": 1}, "bad_field"),
        ({"v": V, "kind": "chunk", "sid": bytes(15), "seq": 0}, "bad_field"),
        ({"v": V, "kind": "reply", "req": 1, "ok": 1, "reason": None, "detail": ""}, "bad_field"),
        # a refusal outside the vocabulary, or the free text that protocol 1 sent
        ({"v": V, "kind": "reply", "req": 1, "ok": False, "reason": "lol", "detail": ""}, "bad_field"),
        ({"v": V, "kind": "reply", "req": 1, "ok": False, "reason": "", "detail": ""}, "bad_field"),
        ({"v": 1, "kind": "ping", "req": 1, "sent": 0.0}, "bad_version"),
        (
            {
                "v": V,
                "kind": "update",
                "req": 1,
                "round": 1,
                "term": 0,
                "digest": bytes(32),
                "manifest": [],
                "meta": {"k": [1]},
            },
            "bad_field",
        ),
        (
            {
                "v": V,
                "kind": "update",
                "req": 1,
                "round": 1,
                "term": 0,
                "digest": bytes(32),
                "manifest": [{"name": "a"}],
                "meta": {},
            },
            "bad_manifest",
        ),
        (
            {
                "v": V,
                "kind": "update",
                "req": 1,
                "round": 1,
                "term": 0,
                "digest": bytes(32),
                "manifest": [],
                "meta": {str(i): i for i in range(40)},
            },
            "bad_header",
        ),  # over the map-length unpack limit
        ({"v": "1", "kind": "ping", "req": 1, "sent": 0.0}, "bad_version"),
        ({"kind": "ping"}, "bad_version"),
        ({"v": V, "kind": {"x": 1}}, "unknown_kind"),
    ],
)
def test_invalid_headers_name_their_reason(header: dict, reason: str) -> None:
    with pytest.raises(m.BadMessage) as info:
        m.decode(msgpack.packb(header, use_bin_type=True))
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_random_bytes_only_raises_bad_message(data: bytes) -> None:
    try:
        msg = m.decode(data)
    except m.BadMessage as exc:
        assert exc.reason in {"bad_header", "bad_version", "unknown_kind", "bad_field", "bad_manifest"}
    else:
        assert isinstance(msg, m.Message)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=8), st.integers(1, 40))
def test_chunks_cover_frames_in_order(sizes: list[int], chunk: int) -> None:
    frames = [memoryview(bytes([i % 251]) * n) for i, n in enumerate(sizes)]
    chunks = list(iter_chunks(frames, chunk))
    joined = b"".join(b"".join(bytes(p) for p in c) for c in chunks)
    assert joined == b"".join(bytes(f) for f in frames)
    assert all(sum(len(p) for p in c) == chunk for c in chunks[:-1])
    assert not chunks or 0 < sum(len(p) for p in chunks[-1]) <= chunk


def _stream(key: bytes | None, chunk: int = 8) -> tuple[Inbound, Outbound, list[list[bytes | memoryview]]]:
    state = {"a": torch.arange(5, dtype=torch.float32), "b": torch.arange(3, dtype=torch.int16)}
    manifest, frames = codec.encode(state)
    sid = new_sid()
    inbound = Inbound(sid, b"peer", manifest, chunk, key)
    out = Outbound(sid, b"peer", key)
    sealed = [out.seal(i, pieces) for i, pieces in enumerate(iter_chunks(frames, chunk))]
    return inbound, out, sealed


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["curve", "aead"])
async def test_inbound_reassembles_and_hashes(key: bytes | None) -> None:
    inbound, _, sealed = _stream(key)
    inbound.granted = inbound.credits_to_grant(100)
    assert inbound.granted == inbound.n_chunks == 4  # 26 bytes in chunks of 8
    for seq, frames in enumerate(sealed):
        inbound.accept(seq, frames)
    assert inbound.done.is_set() and inbound.failed is None
    state = codec.decode_flat(inbound.manifest, inbound.buffer.numpy())
    assert await inbound.digest() == codec.content_hash(state)
    assert torch.equal(state["a"], torch.arange(5, dtype=torch.float32))


def _flip(data: bytes | memoryview) -> bytes:
    out = bytearray(data)
    out[-1] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(
    ("key", "mangle", "reason"),
    [
        (b"k" * 32, lambda s: (1, s[1]), "out_of_order"),
        (b"k" * 32, lambda s: (0, [bytes(s[0][0])[:-1]]), "chunk_size"),
        (b"k" * 32, lambda s: (0, [_flip(s[0][0])]), "auth_failed"),
        (b"k" * 32, lambda s: (0, s[1]), "auth_failed"),  # chunk 1's ciphertext replayed as chunk 0
        (None, lambda s: (0, [b"x" * 7]), "chunk_size"),
        (None, lambda s: (3, s[3]), "out_of_order"),
    ],
)
def test_inbound_rejects_bad_chunks(key, mangle, reason: str) -> None:
    inbound, _, sealed = _stream(key)
    inbound.granted = 4
    seq, frames = mangle(sealed)
    with pytest.raises(m.BadMessage) as info:
        inbound.accept(seq, frames)
    assert info.value.reason == reason


def test_inbound_refuses_chunks_beyond_credit() -> None:
    inbound, _, sealed = _stream(None)
    inbound.granted = 1
    inbound.accept(0, sealed[0])
    with pytest.raises(m.BadMessage) as info:
        inbound.accept(1, sealed[1])
    assert info.value.reason == "over_credit"
    assert inbound.credits_to_grant(2) == 2  # window 2: chunks 1 and 2 may be in flight after chunk 0


async def test_outbound_waits_for_credit_and_stops_on_failure() -> None:
    out = Outbound(new_sid(), b"peer", new_key())
    with pytest.raises(asyncio.TimeoutError):
        await out.take(0.05)
    out.grant(1)
    await out.take(0.05)
    asyncio.get_running_loop().call_later(0.01, out.fail, "stalled")
    with pytest.raises(m.BadMessage):
        await out.take(1.0)
