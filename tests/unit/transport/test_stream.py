"""Chunked streams (swarmd/transport/stream.py): chunking, credit on both sides, sealing, the
receiver's checks on every chunk, and the digest over what it received."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd import codec
from swarmd.transport import messages as m
from swarmd.transport import stream
from swarmd.transport.stream import (
    TAG_SIZE,
    Inbound,
    Outbound,
    SealBuffers,
    chunk_count,
    iter_chunks,
    new_key,
    new_sid,
)

KEY = b"k" * 32
STATE = {"a": torch.arange(5, dtype=torch.float32), "b": torch.arange(3, dtype=torch.int16)}  # 26 bytes
Sealed = list[list[bytes | memoryview]]


def _stream(key: bytes | None, chunk: int = 8, state=STATE) -> tuple[Inbound, Outbound, Sealed]:
    """A receiver and a sender of one stream, and every chunk of `state` as the sender seals it."""
    manifest, frames = codec.encode(state)
    sid = new_sid()
    inbound = Inbound(sid, b"peer", manifest, chunk, key)
    out = Outbound(sid, b"peer", key)
    sealed = [out.seal(i, pieces) for i, pieces in enumerate(iter_chunks(frames, chunk))]
    return inbound, out, sealed


def _flip(data: bytes | memoryview) -> bytes:
    out = bytearray(data)
    out[-1] ^= 0x01
    return bytes(out)


def _reason(inbound: Inbound, seq: int, frames: list[bytes | memoryview]) -> str:
    with pytest.raises(m.BadMessage) as info:
        inbound.accept(seq, frames)
    return info.value.reason


# --- chunking ---------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=8), st.integers(1, 40))
def test_chunks_cover_frames_in_order(sizes: list[int], chunk: int) -> None:
    frames = [memoryview(bytes([i % 251]) * n) for i, n in enumerate(sizes)]
    chunks = list(iter_chunks(frames, chunk))
    joined = b"".join(b"".join(bytes(p) for p in c) for c in chunks)
    assert joined == b"".join(bytes(f) for f in frames)
    assert all(sum(len(p) for p in c) == chunk for c in chunks[:-1])
    assert not chunks or 0 < sum(len(p) for p in chunks[-1]) <= chunk
    assert len(chunks) == chunk_count(sum(sizes), chunk)


def test_chunks_view_typed_frames_without_copying() -> None:
    t = torch.arange(6, dtype=torch.float32)  # 24 bytes, one frame of 4-byte items
    frame = memoryview(t.numpy())
    chunks = list(iter_chunks([frame], 10))
    assert [sum(len(p) for p in c) for c in chunks] == [10, 10, 4]
    t[0] = 42.0  # the pieces are views of the tensor, not copies
    assert bytes(chunks[0][0])[:4] == bytes(memoryview(torch.tensor([42.0]).numpy()))


# --- credit -----------------------------------------------------------------------------------------


def test_inbound_grants_up_to_the_window_and_never_past_the_end() -> None:
    inbound, _, sealed = _stream(None)  # 4 chunks
    assert inbound.n_chunks == 4
    assert inbound.credits_to_grant(2) == 2
    inbound.granted = 2
    assert inbound.credits_to_grant(2) == 0  # both granted chunks still in flight
    inbound.accept(0, sealed[0])
    assert inbound.credits_to_grant(2) == 1  # one landed: one more may be in flight
    assert inbound.credits_to_grant(100) == 2  # a wide window stops at the last chunk
    inbound.granted = 4
    assert inbound.credits_to_grant(100) == 0


def test_inbound_refuses_chunks_beyond_credit() -> None:
    inbound, _, sealed = _stream(None)
    inbound.granted = 1
    inbound.accept(0, sealed[0])
    assert _reason(inbound, 1, sealed[1]) == "over_credit"
    assert inbound.next_seq == 1 and inbound.offset == 8  # the refused chunk wrote nothing


async def test_outbound_spends_exactly_the_credit_it_was_granted() -> None:
    out = Outbound(new_sid(), b"peer", new_key())
    with pytest.raises(asyncio.TimeoutError):
        await out.take(0.05)
    out.grant(2)
    await out.take(0.05)
    await out.take(0.05)
    with pytest.raises(asyncio.TimeoutError):
        await out.take(0.05)


async def test_a_grant_wakes_a_waiting_sender() -> None:
    out = Outbound(new_sid(), b"peer", None)
    asyncio.get_running_loop().call_later(0.01, out.grant, 1)
    t0 = time.monotonic()
    await out.take(5.0)
    assert time.monotonic() - t0 < 1.0


async def test_outbound_fail_wakes_a_waiter_with_the_reason() -> None:
    out = Outbound(new_sid(), b"peer", new_key())
    asyncio.get_running_loop().call_later(0.01, out.fail, "stalled")
    t0 = time.monotonic()
    with pytest.raises(m.BadMessage) as info:
        await out.take(5.0)
    assert info.value.reason == "stalled"
    assert time.monotonic() - t0 < 1.0  # woken by the failure, not by the timeout
    out.grant(3)  # credit after a failure does not revive the stream
    with pytest.raises(m.BadMessage):
        await out.take(0.05)


def test_inbound_fail_ends_the_stream_and_wakes_its_credit_loop() -> None:
    inbound, _, _ = _stream(KEY)
    inbound.fail("cancelled")
    assert inbound.failed == "cancelled" and inbound.done.is_set() and inbound.wake.is_set()


# --- sealing ----------------------------------------------------------------------------------------


def test_a_sealed_chunk_is_one_ciphertext_with_a_tag_and_no_plaintext() -> None:
    _, _, sealed = _stream(KEY)
    _, frames = codec.encode(STATE)
    plain = b"".join(bytes(f) for f in frames)
    assert all(len(c) == 1 for c in sealed)
    assert [len(c[0]) for c in sealed] == [8 + TAG_SIZE, 8 + TAG_SIZE, 8 + TAG_SIZE, 2 + TAG_SIZE]
    assert plain[:8] not in bytes(sealed[0][0])


class _Tracker:
    """Stands in for pyzmq's MessageTracker: `done` once libzmq released the message."""

    def __init__(self) -> None:
        self.done = False


def test_sealing_into_the_node_s_buffers_gives_the_same_ciphertext() -> None:
    """Chunks spanning several tensors are gathered into a scratch buffer, the last chunk uses a prefix."""
    _, frames = codec.encode(STATE)
    pool = SealBuffers()
    fresh, pooled = Outbound(b"s" * 16, b"peer", KEY), Outbound(b"s" * 16, b"peer", KEY)
    for seq, pieces in enumerate(iter_chunks(frames, 8)):
        want = bytes(fresh.seal(seq, pieces)[0])
        got = pooled.seal(seq, pieces, pool, 8)[0]
        assert bytes(got) == want
        pool.give_back(got, _Tracker())


def test_a_seal_buffer_is_reused_only_once_its_send_is_done() -> None:
    pool = SealBuffers(keep=2)
    first = pool.take(24)
    tracker = _Tracker()
    pool.give_back(memoryview(first)[:10], tracker)
    second = pool.take(24)
    assert second is not first  # libzmq may still be writing `first` to the socket
    tracker.done = True
    assert pool.take(24) is first
    pool.give_back(memoryview(bytearray(24)), _Tracker())  # not one of ours: never taken back
    pool.give_back(memoryview(second), None)  # a send without a tracker: not reused either
    assert len(pool._idle) == 0 and len(pool._sending) == 0


def test_without_a_key_the_chunk_travels_as_its_pieces() -> None:
    _, _, sealed = _stream(None)
    _, frames = codec.encode(STATE)
    assert b"".join(bytes(p) for c in sealed for p in c) == b"".join(bytes(f) for f in frames)


@pytest.mark.parametrize("key", [None, KEY], ids=["curve", "aead"])
async def test_inbound_reassembles_and_hashes(key: bytes | None) -> None:
    inbound, _, sealed = _stream(key)
    inbound.granted = inbound.credits_to_grant(100)
    assert inbound.granted == inbound.n_chunks == 4  # 26 bytes in chunks of 8
    for seq, frames in enumerate(sealed):
        assert not inbound.done.is_set()
        inbound.accept(seq, frames)
    assert inbound.done.is_set() and inbound.failed is None
    state = codec.decode_flat(inbound.manifest, inbound.buffer.numpy())
    assert await inbound.digest() == codec.content_hash(STATE)
    assert torch.equal(state["a"], STATE["a"]) and torch.equal(state["b"], STATE["b"])


async def test_streams_received_at_once_each_hash_their_chunks_in_order() -> None:
    state = {"w": torch.randn(3000), "n": torch.arange(17, dtype=torch.int64)}
    streams = [_stream(KEY, chunk=96, state=state) for _ in range(3)]
    for inbound, _, _ in streams:
        inbound.granted = inbound.credits_to_grant(inbound.n_chunks)
        assert inbound.n_chunks > 100
    for seq in range(streams[0][0].n_chunks):  # interleaved, as chunks of three senders arrive
        for inbound, _, sealed in streams:
            inbound.accept(seq, sealed[seq])
    assert [await s[0].digest() for s in streams] == [codec.content_hash(state)] * 3


async def test_two_streams_hash_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader taking two updates hashes both at once: neither waits for the other's hash to end."""
    both = threading.Barrier(2, timeout=10)

    class Meeting(codec.ContentHasher):
        def update(self, data: codec.Buffer) -> None:
            both.wait()  # passes only once the other stream is hashing too (one worker: broken, raised)
            super().update(data)

    monkeypatch.setattr(stream, "ContentHasher", Meeting)
    (a, _, sealed_a), (b, _, sealed_b) = _stream(KEY, chunk=32), _stream(KEY, chunk=32)
    for inbound, sealed in ((a, sealed_a), (b, sealed_b)):
        inbound.granted = inbound.credits_to_grant(1)
        inbound.accept(0, sealed[0])  # the whole 26-byte state in one chunk
    assert await a.digest() == await b.digest() == codec.content_hash(STATE)


# --- the receiver's checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "mangle", "reason"),
    [
        (KEY, lambda s: (1, s[1]), "out_of_order"),
        (KEY, lambda s: (0, [bytes(s[0][0])[:-1]]), "chunk_size"),  # truncated
        (KEY, lambda s: (0, [bytes(s[0][0]), b"x"]), "chunk_size"),  # a second frame
        (KEY, lambda s: (0, [_flip(s[0][0])]), "auth_failed"),
        (KEY, lambda s: (0, s[1]), "auth_failed"),  # chunk 1's ciphertext replayed as chunk 0
        (None, lambda s: (0, [b"x" * 7]), "chunk_size"),
        (None, lambda s: (0, [b"x" * 9]), "chunk_size"),
        (None, lambda s: (3, s[3]), "out_of_order"),
    ],
)
def test_inbound_rejects_bad_chunks(key, mangle, reason: str) -> None:
    inbound, _, sealed = _stream(key)
    inbound.granted = 4
    seq, frames = mangle(sealed)
    assert _reason(inbound, seq, frames) == reason


def test_a_chunk_sealed_under_another_key_fails_authentication() -> None:
    inbound, _, _ = _stream(KEY)
    _, _, foreign = _stream(b"x" * 32)
    inbound.granted = 4
    assert _reason(inbound, 0, foreign[0]) == "auth_failed"


def test_a_chunk_sealed_for_another_stream_fails_authentication() -> None:
    inbound, _, _ = _stream(KEY)
    _, frames = codec.encode(STATE)
    other = Outbound(new_sid(), b"peer", KEY)  # same key, another stream id: the AAD differs
    sealed = other.seal(0, next(iter_chunks(frames, 8)))
    inbound.granted = 4
    assert _reason(inbound, 0, sealed) == "auth_failed"


def test_a_chunk_after_the_end_is_out_of_order() -> None:
    inbound, _, sealed = _stream(None)
    inbound.granted = 4
    for seq, frames in enumerate(sealed):
        inbound.accept(seq, frames)
    assert _reason(inbound, 4, sealed[3]) == "out_of_order"


# --- the digest -------------------------------------------------------------------------------------


async def test_the_digest_is_over_the_bytes_received_not_the_bytes_claimed() -> None:
    inbound, _, sealed = _stream(None)
    inbound.granted = 4
    inbound.accept(0, [b"\xff" * 8])  # right size, wrong bytes: only the hash can tell
    for seq, frames in enumerate(sealed[1:], start=1):
        inbound.accept(seq, frames)
    assert inbound.done.is_set() and inbound.failed is None
    got = await inbound.digest()
    assert got != codec.content_hash(STATE)
    assert got == codec.content_hash(codec.decode_flat(inbound.manifest, inbound.buffer.numpy()))


async def test_an_empty_state_is_done_at_once_with_the_empty_hash() -> None:
    inbound, _, sealed = _stream(KEY, state={})
    assert sealed == [] and inbound.n_chunks == 0 and inbound.done.is_set()
    assert await inbound.digest() == codec.content_hash({})
