"""Cut-through dissemination on three real nodes in one process (sealed bulk streams on loopback).

A holds a model that is itself still arriving (its download is faked: the test lands the chunks by
hand); B fetches it from A with `relay` on and so serves it onward while it arrives; C fetches it
from B. C's bytes flow while A's copy is still incomplete, and C checks the full hash itself. When
A's download fails, B's fetch and C's fetch both fail at once with RelayFailed, instead of hanging
until a stall timeout."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import torch
import zmq

from swarmd import codec
from swarmd.errors import RelayFailed
from swarmd.transport import Limits, Node
from swarmd.transport.handler import FetchOnly
from swarmd.transport.stream import Inbound, iter_chunks, new_sid

CHUNK = 64 << 10
LIMITS = dataclasses.replace(Limits(), chunk_size=CHUNK, window=2, stall_timeout=30.0)
BOUND = 20.0  # seconds: far beyond any honest step here; a hang fails the test instead of blocking it


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    made = []
    for _ in range(3):
        pub, sec = zmq.curve_keypair()
        node = Node(
            FetchOnly("test"), bind="tcp://127.0.0.1:*", public_key=pub, secret_key=sec,
            max_bytes=1 << 30, limits=LIMITS,
        )  # fmt: skip
        await node.start()
        made.append(node)
    for node in made:
        node.set_peers({other.peer_id: other.endpoint for other in made if other is not node})
    yield made
    for node in made:
        await node.close()


def _arriving(a: Node, state: dict[str, torch.Tensor]) -> tuple[bytes, Inbound, list[bytes]]:
    """A's own download of `state`, faked: an open stream listed as relayed, and its chunks to land."""
    manifest, frames = codec.encode(state)
    h = codec.hash_frames(manifest, frames)
    upstream = Inbound(new_sid(), b"\0" * 32, manifest, CHUNK, None)
    upstream.granted = upstream.n_chunks
    a._flows.relays[h] = upstream
    return h, upstream, [b"".join(p) for p in iter_chunks(frames, CHUNK)]


async def _until(cond: object, what: str) -> None:
    async def poll() -> None:
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), BOUND)
    except asyncio.TimeoutError:
        pytest.fail(f"never: {what}")


async def test_a_model_is_served_onward_while_it_arrives_and_verified_at_every_hop(nodes) -> None:
    a, b, c = nodes
    state = {"w": torch.randn(100_000, generator=torch.Generator().manual_seed(1))}  # ~6 chunks
    h, upstream, chunks = _arriving(a, state)
    downstream: list[asyncio.Future[dict[str, torch.Tensor]]] = []

    def started() -> None:  # B's stream from A has started: C fetches from B at once
        downstream.append(asyncio.ensure_future(c.fetch_model(b.peer_id, h, max_bytes=1 << 30)))

    at_b = asyncio.ensure_future(b.fetch_model(a.peer_id, h, max_bytes=1 << 30, relay=started))
    half = len(chunks) // 2
    for seq in range(half):
        upstream.accept(seq, [chunks[seq]])
    # C receives bytes B relays while A's own copy is still incomplete (and so is B's)
    await _until(lambda: c.stats.bytes_in > 2 * CHUNK, "C received relayed chunks")
    assert not upstream.done.is_set() and not at_b.done() and downstream and not downstream[0].done()
    assert h in b._flows.relays  # B serves it from the buffer it is receiving into: no second copy
    for seq in range(half, len(chunks)):
        upstream.accept(seq, [chunks[seq]])
    got_b, got_c = await asyncio.wait_for(asyncio.gather(at_b, downstream[0]), BOUND)
    assert torch.equal(got_b["w"], state["w"]) and torch.equal(got_c["w"], state["w"])
    assert h not in b._flows.relays  # done: served from the stored model from now on, if at all


async def test_an_upstream_that_fails_mid_stream_fails_the_downstream_cleanly(nodes) -> None:
    a, b, c = nodes
    state = {"w": torch.randn(100_000, generator=torch.Generator().manual_seed(2))}
    h, upstream, chunks = _arriving(a, state)
    downstream: list[asyncio.Future[dict[str, torch.Tensor]]] = []

    def started() -> None:
        downstream.append(asyncio.ensure_future(c.fetch_model(b.peer_id, h, max_bytes=1 << 30)))

    at_b = asyncio.ensure_future(b.fetch_model(a.peer_id, h, max_bytes=1 << 30, relay=started))
    upstream.accept(0, [chunks[0]])
    upstream.accept(1, [chunks[1]])
    await _until(lambda: c.stats.bytes_in > CHUNK, "C received relayed chunks")
    upstream.fail("stalled")  # A's own download breaks off
    # B hears it from A, C from B: each fails with the named error, well before any stall timeout
    with pytest.raises(RelayFailed):
        await asyncio.wait_for(at_b, BOUND)
    with pytest.raises(RelayFailed):
        await asyncio.wait_for(downstream[0], BOUND)
    assert h not in b._flows.relays and c.stats.rejections.get("hash_mismatch", 0) == 0
    # The puller tries another holder: a completed copy is fetched and verified as usual.
    del a._flows.relays[h]
    whole = FetchOnly("test")
    whole.serve_model = lambda model_hash: codec.encode(state) if model_hash == h else None  # type: ignore[method-assign]
    a._ctx.handler = whole
    got = await asyncio.wait_for(c.fetch_model(a.peer_id, h, max_bytes=1 << 30), BOUND)
    assert torch.equal(got["w"], state["w"])
