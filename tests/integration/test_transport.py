"""Transport between real processes on 127.0.0.1: CURVE admission, bit-exact streams, hash checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import torch
import zmq
from harness import FAST
from peerproc import Recorder, densenet_like_state

from swarmd import codec
from swarmd.errors import HashMismatch, IdentityError, PeerRejected, StreamFailed, TransportError
from swarmd.ledger.devnet import free_port
from swarmd.transport import Node, Refusal, SecAggTopic, Verdict, client
from swarmd.transport.messages import MAX_SECAGG_BODY, Grant, Serve

pytestmark = pytest.mark.multiproc

DENSENET121 = 7_000_000  # float32 parameters of a 2D DenseNet121


def introduce(peer: Any, local: Any) -> dict[bytes, str]:
    """Make a child-process peer and the local node members of each other; returns the members."""
    members = {peer.key: peer.endpoint, local.node.peer_id: local.node.endpoint}
    peer.set_peers(members)
    local.set_peers(members)
    return members


def wait_streaming(local: Any) -> None:
    """Until the local node has sent 8 MiB: a big update is then mid-stream."""
    end = time.monotonic() + 30
    while local.node.stats.bytes_out < 8 << 20 and time.monotonic() < end:
        time.sleep(0.005)


def test_densenet_sized_update_arrives_bit_exact_then_spreads_by_fetch(spawn_peer, loop_node) -> None:
    a, b = spawn_peer(), spawn_peer()
    local = loop_node(limits=FAST)
    members = {a.key: a.endpoint, b.key: b.endpoint, local.node.peer_id: local.node.endpoint}
    for n in (a, b, local):
        n.set_peers(members)

    out = a.call("update", peer=b.key.hex(), n_params=DENSENET121, seed=7)
    assert out["ok"], out
    assert out["verdict"]["ok"] and out["verdict"]["detail"] == out["sent"]  # B re-hashed what it decoded

    # dissemination: a third process pulls the model from the holder and verifies it by hash
    model = local.run(local.node.fetch_model(b.key, codec.parse_hash(out["sent"]), max_bytes=1 << 30))
    expected = densenet_like_state(DENSENET121, seed=7)
    assert model.keys() == expected.keys()
    assert all(torch.equal(model[k], expected[k]) for k in expected)
    assert local.run(local.node.ping(b.key)) < 5.0
    local.run(local.node.announce(b.key, round=4, model_hash=codec.parse_hash(out["sent"])))
    stats = b.call("stats")
    assert stats["updates"] == 1 and stats["announces"] == [[4, out["sent"][2:]]]


class Meeting(Recorder):
    """Holds every update until two are in the handler at once (refused after 5 s alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = self.most = 0
        self.together: asyncio.Event | None = None

    async def on_update(self, peer, header, state, digest) -> Verdict:  # type: ignore[no-untyped-def]
        self.together = self.together or asyncio.Event()
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside == 2:
            self.together.set()
        try:
            await asyncio.wait_for(self.together.wait(), 5)
        except TimeoutError:
            return Verdict(False, Refusal.INTERNAL_ERROR, "alone in the handler")
        finally:
            self.inside -= 1
        return await super().on_update(peer, header, state, digest)


def test_updates_received_at_once_are_in_the_handler_at_once(loop_node) -> None:
    """A leader storing one update (a write and an fsync) does not hold up the next one's handling."""
    local = loop_node(limits=FAST, handler=Meeting())
    senders = [loop_node(limits=FAST) for _ in range(2)]
    members = {n.node.peer_id: n.node.endpoint for n in (local, *senders)}
    for n in (local, *senders):
        n.set_peers(members)
    states = [densenet_like_state(300_000, seed=s) for s in (1, 2)]
    sends = [
        asyncio.run_coroutine_threadsafe(
            n.node.send_update(local.node.peer_id, round=3, term=1, state=state), n.loop
        )
        for n, state in zip(senders, states, strict=True)
    ]
    verdicts = [f.result(30) for f in sends]
    assert [v.ok for v in verdicts] == [True, True], verdicts
    assert local.handler.most == 2 and local.handler.updates == 2


def test_curve_bulk_mode_round_trip(spawn_peer, loop_node) -> None:
    b = spawn_peer("--bulk", "curve")
    local = loop_node(limits=FAST, bulk="curve")
    introduce(b, local)
    state = densenet_like_state(1_500_000, seed=1)
    verdict = local.run(local.node.send_update(b.key, round=3, term=1, state=state, meta={"samples": 12}))
    assert verdict == Verdict(True, None, codec.hash_hex(codec.content_hash(state)))
    before = local.node.stats.bytes_out
    stale = local.run(local.node.send_update(b.key, round=0, term=1, state=state))  # refused on offer
    assert (stale.ok, stale.reason, stale.detail) == (False, Refusal.NOT_READY, "stale round")
    assert local.node.stats.bytes_out - before < 4096  # refused on the offer, before any chunk
    got = local.run(local.node.fetch_model(b.key, codec.content_hash(state), max_bytes=1 << 30))
    assert codec.content_hash(got) == codec.content_hash(state)


def test_a_model_named_before_protocol_4_is_fetched_by_its_v1_hash(spawn_peer, loop_node) -> None:
    """The chain names the models of rounds finalized before the content hash became BLAKE3 by their v1
    (sha256) hash: a site catching up fetches one by that name, and the bytes are checked against it."""
    b = spawn_peer()
    local = loop_node(limits=FAST)
    introduce(b, local)
    state = densenet_like_state(300_000, seed=4)
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=state)).ok
    v1 = codec.content_hash(state, legacy=True)
    got = local.run(local.node.fetch_model(b.key, v1, max_bytes=1 << 30))
    assert codec.content_hash(got, legacy=True) == v1 and codec.content_hash(got) == codec.content_hash(state)
    b.call("corrupt_serving")
    with pytest.raises(HashMismatch):
        local.run(local.node.fetch_model(b.key, v1, max_bytes=1 << 30))


def test_secagg_messages_carry_opaque_bodies_and_refusals(spawn_peer, loop_node) -> None:
    b = spawn_peer()
    local = loop_node(limits=FAST)
    introduce(b, local)
    body = bytes(range(256)) * (MAX_SECAGG_BODY // 256 - 1)  # near the largest body (the echo adds a prefix)
    answer = local.run(local.node.secagg(b.key, round=5, topic=SecAggTopic.UNMASK, body=body))
    assert answer == b"5:unmask:" + body[::-1]
    with pytest.raises(PeerRejected, match="privacy_refused asked for too much") as refused:
        local.run(local.node.secagg(b.key, round=5, topic=SecAggTopic.SHARES, body=b"no thanks"))
    assert refused.value.reason == Refusal.PRIVACY_REFUSED  # the word a caller decides on
    assert b.call("stats")["rejections"] == {}


def test_non_member_is_refused_at_the_handshake(spawn_peer, loop_node) -> None:
    b = spawn_peer()
    outsider = loop_node(limits=FAST)
    b.set_peers({b.key: b.endpoint})  # the outsider's key is not in B's member set
    outsider.set_peers({b.key: b.endpoint})
    t0 = time.monotonic()
    with pytest.raises(PeerRejected, match="handshake refused"):
        outsider.run(outsider.node.send_update(b.key, round=1, term=0, state={"w": torch.ones(4)}, timeout=5))
    assert time.monotonic() - t0 < 5  # refused fast, from the handshake, not by a timeout
    stats = b.call("stats")
    assert stats["denied"] >= 1 and stats["updates"] == 0 and stats["rejections"] == {}


def test_a_refused_peer_gets_through_once_it_is_listed(spawn_peer, loop_node) -> None:
    # A restarted site refuses everyone until it has read the member list; a site refuses a newcomer
    # until it has seen the admission. libzmq never retries a refused handshake: the client does.
    b = spawn_peer()
    local = loop_node(limits=FAST)
    b.set_peers({b.key: b.endpoint})  # B does not list us yet
    local.set_peers({b.key: b.endpoint})
    with pytest.raises(PeerRejected, match="handshake refused"):
        local.run(local.node.ping(b.key, timeout=5))
    with pytest.raises(PeerRejected, match="handshake refused"):
        local.run(local.node.ping(b.key, timeout=5))  # kept for a moment: no handshake per request
    introduce(b, local)
    time.sleep(client.REFUSAL_KEPT)
    assert local.run(local.node.ping(b.key, timeout=5)) < 5.0  # a fresh handshake, accepted


def test_corrupted_bytes_are_caught_by_the_hash(spawn_peer, loop_node) -> None:
    b = spawn_peer()
    local = loop_node(limits=FAST)
    introduce(b, local)
    state = densenet_like_state(600_000, seed=3)
    manifest, frames = codec.encode(state)
    committed = codec.hash_frames(manifest, frames)
    corrupted = [bytearray(f) for f in frames]
    corrupted[-2][100] ^= 0x01  # one bit, deep inside the stream
    verdict = local.run(
        local.node.send_update(
            b.key, round=1, term=0, payload=(manifest, [memoryview(c) for c in corrupted]), digest=committed
        )
    )
    assert not verdict.ok and verdict.reason == "hash_mismatch"
    stats = b.call("stats")
    assert stats["updates"] == 0 and stats["rejections"] == {"hash_mismatch": 1}  # never reached the handler

    # a holder serving tampered bytes: the fetcher refuses them
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=state)).ok
    b.call("corrupt_serving")
    with pytest.raises(HashMismatch):
        local.run(local.node.fetch_model(b.key, committed, max_bytes=1 << 30))
    assert local.node.stats.rejections["hash_mismatch"] == 1


def test_a_restarted_peer_is_reached_again_on_the_same_connection(spawn_peer, loop_node) -> None:
    pub, sec = zmq.curve_keypair()
    for _ in range(3):  # a probed free port can be taken by another process before the child binds it
        args = (
            "--bind",
            f"tcp://127.0.0.1:{free_port()}",
            "--bulk-bind",
            f"tcp://127.0.0.1:{free_port()}",
            # z85 has no comma; it does have '-', and a key starting with it must not read as an option
            f"--keys={pub.decode()},{sec.decode()}",
        )
        with contextlib.suppress(RuntimeError):
            b = spawn_peer(*args)
            break
    else:
        pytest.fail("could not start the peer on a free port")
    local = loop_node(limits=FAST)
    members = introduce(b, local)
    state = densenet_like_state(300_000, seed=5)
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=state)).ok

    b.close()  # the peer goes away ...
    with pytest.raises(TransportError):
        local.run(local.node.ping(b.key, timeout=0.5))
    b = spawn_peer(*args)  # ... and comes back on the same endpoint with the same key
    b.set_peers(members)
    assert local.run(local.node.ping(b.key, timeout=5)) < 5
    verdict = local.run(local.node.send_update(b.key, round=2, term=0, state=state))
    assert verdict.ok and verdict.detail == codec.hash_hex(codec.content_hash(state))


def test_a_cancelled_send_frees_the_receivers_slot_at_once(spawn_peer, loop_node) -> None:
    b = spawn_peer("--stall", "60")
    local = loop_node(limits=FAST)
    introduce(b, local)
    big = densenet_like_state(30_000_000, seed=1)
    sending = asyncio.run_coroutine_threadsafe(
        local.node.send_update(b.key, round=1, term=0, state=big), local.loop
    )
    wait_streaming(local)
    sending.cancel()  # e.g. the daemon saw a new term on chain
    t0 = time.monotonic()
    small = {"w": torch.ones(10)}
    assert local.run(local.node.send_update(b.key, round=2, term=0, state=small)).ok
    assert time.monotonic() - t0 < 10  # not the 60 s stall timeout
    assert b.call("stats")["rejections"] == {"cancelled": 1}


def test_an_offer_granted_after_its_sender_gave_up_is_cancelled_not_stalled(spawn_peer, loop_node) -> None:
    """The receiver's slot is busy, the second offer's sender times out and moves on; when the
    slot frees, the receiver grants that withdrawn offer. The sender cancels it at once, so the
    receiver does not hold its slot for the 60 s stall timeout."""
    b = spawn_peer("--stall", "60", "--max-streams", "1")
    local = loop_node(limits=FAST)
    introduce(b, local)
    first = asyncio.run_coroutine_threadsafe(
        local.node.send_update(b.key, round=1, term=0, state=densenet_like_state(30_000_000, seed=3)),
        local.loop,
    )
    wait_streaming(local)
    small = {"w": torch.ones(10)}
    with pytest.raises(TransportError, match="no answer"):
        local.run(local.node.send_update(b.key, round=2, term=0, state=small, timeout=0.05))
    assert first.result(60).ok
    t0 = time.monotonic()
    assert local.run(local.node.send_update(b.key, round=3, term=0, state=small)).ok
    assert time.monotonic() - t0 < 10  # not the 60 s stall timeout
    assert b.call("stats")["rejections"] == {"cancelled": 1}
    # the orphan grant and then the receiver's "cancelled" reply answer an offer the sender had ended:
    # late, not hostile (an answer to no request of ours at all is a rejection, unknown_request)
    assert local.node.stats.late_answers == 2 and not local.node.stats.rejections


def test_a_fetch_served_after_its_fetcher_gave_up_is_cancelled_not_stalled(spawn_peer, loop_node) -> None:
    """The server's one serve slot is busy, a second fetch times out while queued for it; when the slot
    frees, the server serves that abandoned fetch. The fetcher cancels it at once, so the server does not
    hold its slot for the 60 s stall timeout (a fetcher that kept asking again would otherwise keep every
    slot taken by serves nobody reads)."""
    b = spawn_peer("--stall", "60", "--max-serves", "1")
    local = loop_node(limits=FAST)
    introduce(b, local)
    big = densenet_like_state(30_000_000, seed=6)
    h = codec.content_hash(big)
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=big)).ok
    first = asyncio.run_coroutine_threadsafe(local.node.fetch_model(b.key, h, max_bytes=1 << 30), local.loop)
    end = time.monotonic() + 30
    while local.node.stats.bytes_in < 8 << 20 and time.monotonic() < end:
        time.sleep(0.005)
    with pytest.raises(TransportError, match="no answer"):
        local.run(local.node.fetch_model(b.key, h, max_bytes=1 << 30, timeout=0.05))
    assert codec.content_hash(first.result(60)) == h
    t0 = time.monotonic()
    assert codec.content_hash(local.run(local.node.fetch_model(b.key, h, max_bytes=1 << 30))) == h
    assert time.monotonic() - t0 < 10  # not the 60 s stall timeout
    assert b.call("stats")["rejections"] == {"cancelled": 1}


def test_an_abandoned_fetch_stops_the_servers_pump_at_once(spawn_peer, loop_node) -> None:
    """A fetcher that gives up mid-stream (its caller timed out) cancels the serve, so the server
    does not keep pumping until its 60 s stall timeout."""
    b = spawn_peer("--stall", "60")
    local = loop_node(limits=FAST)
    introduce(b, local)
    big = densenet_like_state(30_000_000, seed=5)
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=big)).ok
    fetching = asyncio.run_coroutine_threadsafe(
        local.node.fetch_model(b.key, codec.content_hash(big), max_bytes=1 << 30), local.loop
    )
    end = time.monotonic() + 30
    while local.node.stats.bytes_in < 8 << 20 and time.monotonic() < end:
        time.sleep(0.005)
    # Hold the fetcher's loop so it grants nothing: B sends its window of chunks, then waits.
    local.loop.call_soon_threadsafe(time.sleep, 5.0)  # long enough for a starved box to ask B below
    time.sleep(0.5)
    assert b.call("stats")["streams_out"] == 1 and not fetching.done()  # mid-stream
    fetching.cancel()
    end = time.monotonic() + 15  # not the 60 s stall timeout (the loop wakes up to 4.5 s from now)
    while b.call("stats")["streams_out"] and time.monotonic() < end:
        time.sleep(0.05)
    stats = b.call("stats")
    assert stats["streams_out"] == 0 and stats["rejections"] == {"cancelled": 1}
    assert local.node.stats.rejections == {}  # no reply to a cancelled fetch, no stray chunk counted
    got = local.run(local.node.fetch_model(b.key, codec.content_hash(big), max_bytes=1 << 30))
    assert codec.content_hash(got) == codec.content_hash(big)


def cancel_on_arrival(local: Any, kind: type, start: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run `start` as a task on the local node, cancelled in the very step an answer of `kind` reaches
    its queue: the answer stays unread (a caller that gave up just as it came)."""
    node_client = local.node._client
    answered = node_client._on_answer
    task: list[asyncio.Task[Any]] = []

    def on_answer(conn: Any, r: Any, *, via_bulk: bool) -> None:
        answered(conn, r, via_bulk=via_bulk)
        if isinstance(r.msg, kind):
            task[0].cancel()

    node_client._on_answer = on_answer

    async def begin() -> asyncio.Task[Any]:
        task.append(asyncio.ensure_future(start))
        return task[0]

    return local.run(begin())


def until(check: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not check() and time.monotonic() < end:
        time.sleep(0.05)
    return check()


def test_a_fetch_given_up_as_its_serve_arrives_is_cancelled_not_stalled(spawn_peer, loop_node) -> None:
    """The fetcher is cancelled in the step the server's Serve lands, unread. It still cancels the serve,
    so the server frees the slot at once, not after its 60 s stall timeout. (Unread, such serves held
    both of a peer's slots at an owner for 20 s in an N = 8 sharded round, after a restart of its
    fetches, and each of its next questions went unanswered.)"""
    b = spawn_peer("--stall", "60")
    local = loop_node(limits=FAST)
    introduce(b, local)
    small = {"w": torch.arange(1000, dtype=torch.float32)}
    h = codec.content_hash(small)
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=small)).ok
    fetch = cancel_on_arrival(local, Serve, local.node.fetch_model(b.key, h, max_bytes=1 << 30))
    assert until(fetch.done, 30) and fetch.cancelled()
    assert until(lambda: b.call("stats")["streams_out"] == 0, 10)  # not the 60 s stall timeout
    assert b.call("stats")["rejections"] == {"cancelled": 1}
    assert local.node.stats.rejections == {}


def test_an_offer_given_up_as_its_grant_arrives_is_withdrawn_not_stalled(spawn_peer, loop_node) -> None:
    """The same for an update: the sender is cancelled in the step the receiver's Grant lands, unread;
    the receiver hears the offer withdrawn at once, not after its 60 s stall timeout."""
    b = spawn_peer("--stall", "60")
    local = loop_node(limits=FAST)
    introduce(b, local)
    small = {"w": torch.ones(1000)}
    send = cancel_on_arrival(local, Grant, local.node.send_update(b.key, round=1, term=0, state=small))
    assert until(send.done, 30) and send.cancelled()
    assert until(lambda: b.call("stats")["streams_in"] == 0, 10)  # not the 60 s stall timeout
    assert b.call("stats")["rejections"] == {"cancelled": 1}
    assert b.call("stats")["updates"] == 0


def test_a_serve_stopped_for_a_stall_is_a_stream_failure_and_the_next_fetch_succeeds(
    spawn_peer, loop_node
) -> None:
    """A fetcher that grants nothing for longer than the server's stall timeout (a loaded box) gets
    StreamFailed, which says the peer was there and another try may do (an auditor retries it), not
    PeerRejected (it does not hold the model, or refuses us)."""
    b = spawn_peer("--stall", "2")  # not less: B first receives the model from us, under the same timeout
    local = loop_node(limits=FAST)
    introduce(b, local)
    big = densenet_like_state(30_000_000, seed=8)
    h = codec.content_hash(big)
    assert local.run(local.node.send_update(b.key, round=1, term=0, state=big)).ok
    fetching = asyncio.run_coroutine_threadsafe(
        local.node.fetch_model(b.key, h, max_bytes=1 << 30), local.loop
    )
    end = time.monotonic() + 30
    while local.node.stats.bytes_in < 8 << 20 and time.monotonic() < end:
        time.sleep(0.005)
    local.loop.call_soon_threadsafe(time.sleep, 5.0)  # no grant for 5 s: B stops serving after 2 s
    with pytest.raises(StreamFailed, match="stalled"):
        fetching.result(30)
    # (a grant our loop sent on waking, for the stream B had dropped, may count there as unknown_stream)
    assert b.call("stats")["rejections"]["stalled"] == 1
    assert codec.content_hash(local.run(local.node.fetch_model(b.key, h, max_bytes=1 << 30))) == h


def test_bad_keys_and_taken_ports_raise_named_errors(loop_node) -> None:
    first = loop_node(limits=FAST)
    pub, sec = zmq.curve_keypair()
    taken = Node(Recorder(), bind=first.node.endpoint, public_key=pub, secret_key=sec, max_bytes=1)
    with pytest.raises(TransportError, match="cannot bind"):
        first.run(taken.start())
    first.run(taken.close())  # a second close after the failed start is harmless
    with pytest.raises(IdentityError):
        Node(Recorder(), bind="tcp://127.0.0.1:*", public_key=b"short", secret_key=sec, max_bytes=1)
    with pytest.raises(IdentityError):
        Node(Recorder(), bind="tcp://127.0.0.1:*", public_key=pub, secret_key=b"~" * 40, max_bytes=1)


def test_a_receiver_killed_mid_stream_fails_the_send_within_the_stall_timeout(spawn_peer, loop_node) -> None:
    b = spawn_peer()
    local = loop_node(limits=FAST)  # stall_timeout 1 s
    introduce(b, local)
    sending = asyncio.run_coroutine_threadsafe(
        local.node.send_update(b.key, round=1, term=0, state=densenet_like_state(30_000_000, seed=2)),
        local.loop,
    )
    wait_streaming(local)
    b.proc.kill()  # the leader dies mid-exchange (kill -9)
    t0 = time.monotonic()
    with pytest.raises(TransportError):
        sending.result(30)
    assert time.monotonic() - t0 < 5
