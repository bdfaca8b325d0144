"""The bulk channel's fixed-layout headers (swarmd/transport/bulk.py): round trips, every malformed
header named, and a sealed grant that only the stream's key opens and that a replay cannot renew."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd import codec
from swarmd.transport import bulk
from swarmd.transport import messages as m
from swarmd.transport.stream import Inbound, Outbound, new_key, new_sid

SID = bytes(range(16))


def _parse(*frames: bytes) -> bulk.BulkChunk | bulk.BulkGrant:
    return bulk.parse([memoryview(f) for f in frames])


def test_a_chunk_header_round_trips_with_its_payload() -> None:
    head = bulk.chunk_head(SID, 7)
    assert len(head) == bulk.HEAD_SIZE == 28
    got = _parse(head, b"sealed bytes")
    assert isinstance(got, bulk.BulkChunk)
    assert (got.sid, got.seq, bytes(got.sealed)) == (SID, 7, b"sealed bytes")


def test_a_grant_round_trips() -> None:
    head = bulk.head(bulk.KIND_GRANT, SID, 12)
    got = _parse(head + b"t" * bulk.TAG_SIZE)
    assert isinstance(got, bulk.BulkGrant)
    assert (got.sid, got.upto, got.head, got.tag) == (SID, 12, head, b"t" * 16)


def _head(magic: bytes = bulk.MAGIC, version: int = bulk.BULK_VERSION, kind: int = 1) -> bytes:
    return struct.pack(">2sBB16sQ", magic, version, kind, SID, 0)


GRANT = bulk.head(bulk.KIND_GRANT, SID, 1) + bytes(16)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ((), "bulk_frames"),
        ((_head(), b"x", b"y"), "bulk_frames"),  # a third frame
        ((_head(),), "bulk_frames"),  # a chunk without its payload
        ((GRANT, b"x"), "bulk_frames"),  # a grant with a payload
        ((_head()[:-1], b"x"), "bulk_length"),
        ((_head() + b"\0", b"x"), "bulk_length"),
        ((b"\x93\x01\x02\x03", b"x"), "bulk_length"),  # msgpack: the old wire
        ((_head(magic=b"XX"), b"x"), "bulk_magic"),
        ((_head(version=3), b"x"), "bulk_version"),  # 3: the ChaCha20-Poly1305 bulk channel
        ((_head(kind=9), b"x"), "bulk_kind"),
        ((_head(kind=0),), "bulk_kind"),
    ],
)
def test_every_malformed_header_is_named(frames: tuple[bytes, ...], reason: str) -> None:
    with pytest.raises(m.BadMessage) as info:
        _parse(*frames)
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=4))
def test_random_frames_only_raise_bad_message(frames: list[bytes]) -> None:
    try:
        _parse(*frames)
    except m.BadMessage as exc:
        assert exc.reason.startswith("bulk_")


def test_the_bulk_frame_limit_is_exactly_a_sealed_chunk() -> None:
    assert bulk.max_frame(4 << 20) == (4 << 20) + bulk.TAG_SIZE


def _pair(key: bytes) -> tuple[Inbound, Outbound]:
    manifest, _ = _manifest()
    sid = new_sid()
    return Inbound(sid, b"peer", manifest, 16, key), Outbound(sid, b"peer", key)


def _manifest() -> tuple[codec.Manifest, list[memoryview]]:
    return codec.encode({"w": torch.zeros(40)})


def test_a_sealed_grant_opens_only_under_the_stream_key_and_a_replay_grants_nothing() -> None:
    key = new_key()
    inbound, out = _pair(key)
    inbound.granted = 3
    first = _parse(inbound.sealed_grant())
    assert isinstance(first, bulk.BulkGrant)
    out.grant_sealed(first)
    assert out._allowed == 3
    inbound.granted = 5
    second = _parse(inbound.sealed_grant())
    assert isinstance(second, bulk.BulkGrant)
    out.grant_sealed(second)
    out.grant_sealed(first)  # replayed: cumulative credit, so it changes nothing
    assert out._allowed == 5
    forged = bulk.BulkGrant(first.sid, 100, bulk.head(bulk.KIND_GRANT, first.sid, 100), first.tag)
    with pytest.raises(m.BadMessage) as info:
        out.grant_sealed(forged)
    assert info.value.reason == "auth_failed" and out._allowed == 5
    _, stranger = _pair(new_key())
    with pytest.raises(m.BadMessage):
        stranger.grant_sealed(second)
