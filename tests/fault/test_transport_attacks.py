"""Attacks on the transport of a live node in its own process (tests/integration/peerproc.py):

- a stranger (no CURVE key, no bulk login) sends 16 MiB frames to the bulk port and to the control
  port (as ZeroMQ and as raw ZMTP), frames just under the bulk limit, and a message of 50 such
  frames with a made-up bulk login: ZAP ends every such connection in its handshake (counted as
  `bulk_handshake`), so no frame reaches the node's parser, its peak RSS stays far below the
  frames, it keeps answering pings and completes an honest update;
- a member floods 10,000 malformed and expensive frames (garbage, nested empty arrays, huge
  manifests, oversize headers): what is beyond its budget is dropped as `rate`, the node keeps
  answering pings and completes an honest update sent during the flood;
- two honest members stream at the same time while a third member holds a stream silent: both
  streams are open at once and complete, the silent one does not shut them out.

The node under test is one module-wide process, attacked in the order above. Ping round trips and
RSS growth are printed (run with -s): they are measured here, never asserted as timings.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from swarmd.transport import bulk
from swarmd.transport.messages import PROTOCOL_VERSION as V

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from harness import PeerProc, RawPeer

pytestmark = pytest.mark.multiproc

MIB = 1 << 20


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


# A ping unanswered this long is missed: long enough that a descheduled process on a loaded 2-core box is
# not taken for a node that stopped answering.
PING_WAIT = 10.0


class Pinger(threading.Thread):
    """A member pinging the node over its own connection, recording every round trip."""

    def __init__(self, raw: RawPeer) -> None:
        super().__init__(daemon=True)
        self.raw, self.rtts, self.missed = raw, [], 0
        self._stop_at = threading.Event()

    def run(self) -> None:
        req = 0
        while not self._stop_at.is_set():
            req += 1
            t0 = time.monotonic()
            self.raw.send({"v": V, "kind": "ping", "req": req, "sent": t0})
            answer = self.raw.recv(PING_WAIT)
            while answer is not None and answer.get("req") != req:  # the answer to a ping that timed out
                answer = self.raw.recv(PING_WAIT)
            if answer is None:
                self.missed += 1
            else:
                self.rtts.append(time.monotonic() - t0)
            time.sleep(0.02)

    def stop(self) -> str:
        self._stop_at.set()
        self.join(PING_WAIT + 5)
        rtts = sorted(self.rtts) or [float("nan")]
        return (
            f"{len(self.rtts)} pings, median {statistics.median(rtts) * 1000:.1f} ms, "
            f"max {rtts[-1] * 1000:.1f} ms, missed {self.missed}"
        )


class Target:
    def __init__(self) -> None:
        # the daemon sets max_tensors to its task's count: the control frame limit follows it. A member's
        # message budget of 100/s (the default is 500) is still 2 x the pinger's, and a flood read at any
        # pace above it overdraws it: on a loaded 2-core machine the node read one at ~500 frames/s.
        self.node = PeerProc("--stall", "120", "--max-tensors", "1000", "--peer-messages", "100")
        self.honest = [PeerProc(), PeerProc()]
        self.keys = {name: zmq.curve_keypair() for name in ("pinger", "flood", "silent")}
        self.raws: list[RawPeer] = []
        members = {p.key: p.endpoint for p in [self.node, *self.honest]}
        for pub, _ in self.keys.values():
            members[zmq.utils.z85.decode(pub)] = "tcp://127.0.0.1:1"
        for p in [self.node, *self.honest]:
            p.set_peers({k: v for k, v in members.items() if k != p.key})

    def member(self, name: str) -> RawPeer:
        raw = RawPeer(self.node.endpoint, self.node.key, self.keys[name])
        self.raws.append(raw)
        return raw

    def stranger(self, endpoint: str) -> RawPeer:
        raw = RawPeer(endpoint, None)
        self.raws.append(raw)
        return raw

    def update(
        self, who: int, n_params: int = 1_000_000, out: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        got = self.honest[who].call("update", peer=self.node.key.hex(), n_params=n_params, seed=who)
        if out is not None:
            out.update(got)
        return got

    def stats(self) -> dict[str, Any]:
        return self.node.call("stats")

    def close(self) -> None:
        for raw in self.raws:
            raw.close()
        for p in [self.node, *self.honest]:
            p.close()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


def _ok(result: dict[str, Any]) -> bool:
    return bool(
        result.get("ok") and result["verdict"]["ok"] and result["verdict"]["detail"] == result["sent"]
    )


def _send_for(raw: RawPeer, frames: list[bytes], seconds: float) -> int:
    """Send `frames` again and again for `seconds`, never blocking (a dropped link drops the queue)."""
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            raw.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            sent += 1
        except zmq.Again:
            time.sleep(0.01)
    return sent


def _greet_and_send(port: int, mechanism: bytes, size: int, seconds: float) -> int:
    """A stranger speaking raw ZMTP 3.0: a greeting, then one frame that claims `size` bytes and
    sends them; again and again for `seconds`. Returns how many connections it made."""
    greeting = b"\xff" + bytes(8) + b"\x7f\x03\x00" + mechanism.ljust(20, b"\0") + b"\0" + bytes(31)
    body = bytes(size)
    made, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            made += 1
            s.sendall(greeting + b"\x06" + size.to_bytes(8, "big"))  # a long command frame
            s.sendall(body)
    return made


def test_a_stranger_s_16_mib_frames_cost_the_node_almost_nothing(target: Target) -> None:
    pid = target.node.proc.pid
    pinger = Pinger(target.member("pinger"))
    pinger.start()
    time.sleep(0.3)
    base = _status(pid, "VmHWM")
    big = os.urandom(16 * MIB)
    near = os.urandom(4 * MIB)  # just under the bulk frame limit
    bulk_url = f"tcp://127.0.0.1:{target.node.bulk_port}"
    guesser = RawPeer(bulk_url, None, None, (os.urandom(32), os.urandom(32)))  # PLAIN, a made-up login
    target.raws.append(guesser)
    control_port = int(target.node.endpoint.rsplit(":", 1)[1])
    sent = [
        _send_for(target.stranger(bulk_url), [big], 1.0),
        _greet_and_send(control_port, b"CURVE", 16 * MIB, 1.0),
        _greet_and_send(target.node.bulk_port or 0, b"NULL", 16 * MIB, 0.5),
        _send_for(target.stranger(bulk_url), [bulk.chunk_head(os.urandom(16), 0), near], 0.5),
        _send_for(guesser, [bulk.chunk_head(os.urandom(16), 0), near], 0.5),
        _send_for(guesser, [near] * 50, 0.5),  # one message of 50 frames: libzmq would buffer it whole
    ]
    time.sleep(0.5)
    growth = _status(pid, "VmHWM") - base
    print(f"\nstranger: frames sent {sent}; peak RSS growth {growth / MIB:.1f} MiB; pings: {pinger.stop()}")
    stats = target.stats()
    print(f"rejections: {stats['rejections']}, handshakes denied: {stats['denied']}")
    assert growth < 32 * MIB
    assert pinger.missed == 0 and pinger.rtts
    # not one stranger's frame got as far as the node's parser: only their failed handshakes are counted
    assert set(stats["rejections"]) == {"bulk_handshake"}
    assert stats["denied"] > 0  # the made-up PLAIN login was refused by ZAP
    assert _ok(target.update(0))


def _flood_frames() -> list[bytes]:
    """10,000 frames a member might send to hurt: each kind of malformed or expensive header."""
    entry = {"name": "", "dtype": "float32", "shape": [1], "nbytes": 4}
    manifest = [{**entry, "name": f"t{i:06d}"} for i in range(5_000)]
    offer = {"v": V, "kind": "update", "req": 1, "round": 1, "term": 0, "digest": bytes(32), "meta": {}}
    cheap = [
        b"\xc1garbage",
        os.urandom(200),
        msgpack.packb({"v": V, "kind": "ping", "req": 1, "sent": [[[[]]]] * 2_000}),  # nested, 8 KiB
        msgpack.packb({"v": V, "kind": "announce", "req": 1, "round": 1, "model_hash": os.urandom(32)}),
    ]
    expensive = [
        msgpack.packb({**offer, "manifest": [[]] * 60_000}),  # 60 000 nested empty arrays
        msgpack.packb({"v": V, "kind": "ping", "req": 1, "sent": 0.0, "pad": "x" * 4000 * 40}),  # oversize
        msgpack.packb({**offer, "manifest": manifest}),  # a huge (valid-looking) manifest
        msgpack.packb({**offer, "manifest": [entry] * 5_000}),  # a huge invalid one
    ]
    return [expensive[i // 25 % 4] if i % 25 == 0 else cheap[i % 4] for i in range(10_000)]


def _flood_outcomes(stats: dict[str, Any]) -> int:
    """How many frames the node has dealt with as a flood's frames end: refused, or an announce."""
    refused = sum(n for reason, n in stats["rejections"].items() if reason != "bulk_handshake")
    return refused + len(stats["announces"])


def _drained(target: Target, before: int, frames: int, timeout: float) -> bool:
    """Wait until the node has dealt with all `frames` (it reads a flood at its own pace, long after
    the sender's queue took it); the rate check depends on every frame having been read."""
    end = time.monotonic() + timeout
    while _flood_outcomes(target.stats()) - before < frames:
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_a_member_s_flood_is_dropped_beyond_its_budget_while_an_honest_update_completes(
    target: Target,
) -> None:
    frames = _flood_frames()
    flood = target.member("flood")
    pinger = Pinger(target.member("pinger"))
    pinger.start()
    honest: dict[str, Any] = {}
    before = _flood_outcomes(target.stats())
    sender = threading.Thread(target=target.update, args=(1, 2_000_000, honest))
    sender.start()
    t0 = time.monotonic()
    for f in frames:
        flood.sock.send(f)
    flooded = time.monotonic() - t0
    sender.join(60)
    drained = _drained(target, before, len(frames), 60)
    print(f"\nmember flood: {len(frames)} frames in {flooded:.1f} s; pings: {pinger.stop()}")
    rejected = target.stats()["rejections"]
    print(f"rejections: {rejected}")
    assert _ok(honest), honest
    assert pinger.missed == 0 and pinger.rtts
    assert drained, "the node did not read the whole flood within 60 s"
    assert rejected.get("rate", 0) > 0


def test_a_silent_stream_does_not_shut_out_two_honest_ones(target: Target) -> None:
    silent = target.member("silent")
    spec = {"name": "w", "dtype": "float32", "shape": [3 << 20], "nbytes": 12 * MIB}
    offer = {"v": V, "kind": "update", "req": 7, "round": 1, "term": 0, "digest": bytes(32), "meta": {}}
    silent.send({**offer, "manifest": [spec]})
    grant = silent.recv(10)
    assert grant is not None and grant["kind"] == "grant"  # admitted, and it never sends a chunk
    results: list[dict[str, Any]] = [{}, {}]
    senders = [threading.Thread(target=target.update, args=(i, 12_000_000, results[i])) for i in (0, 1)]
    for s in senders:
        s.start()
    for s in senders:
        s.join(60)
    stats = target.stats()
    assert all(_ok(r) for r in results), results
    # The silent stream was open beside an honest one (both honest ones overlapping as well depends on timing:
    # on a loaded machine the first may finish before the second offers).
    assert stats["max_streams_in"] >= 2
    assert stats["rejections"].get("stalled", 0) == 0  # the silent one still holds its stream
