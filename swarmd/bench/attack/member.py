"""The attacking member: its raw CURVE dealer, the quiet node at its endpoint, the flood of
malformed control frames it sends a round's leader, and the thread that drives it."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from swarmd.errors import SwarmError

if TYPE_CHECKING:
    from swarmd.ledger import Ledger, RoundInfo
from swarmd.bench.attack.common import (
    FLOOD_FRAMES,
    WATCH_INTERVAL,
    BenchFailed,
)


# --- the attacker's sockets -------------------------------------------------------------------------
class Dealer:
    """A ZeroMQ DEALER that sends arbitrary frames: a member's CURVE key, a stranger's, or none."""

    def __init__(
        self,
        endpoint: str,
        server_key: bytes | None = None,
        keys: tuple[bytes, bytes] | None = None,
        login: tuple[bytes, bytes] | None = None,
    ) -> None:
        """`server_key` (raw 32 bytes): CURVE with `keys` (z85 public, secret; fresh when None);
        `login`: a PLAIN user name and password."""
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = 1000 if server_key is not None and keys is not None else 4
        if server_key is not None:
            public, secret = keys or zmq.curve_keypair()
            self.sock.curve_serverkey = server_key
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
        if login is not None:
            self.sock.plain_username, self.sock.plain_password = login
        self.sock.connect(endpoint)

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class QuietMember(threading.Thread):
    """The attacker's own node at its registered endpoint, in a thread: it answers announces and pings
    like any member, and leads and serves nothing. Without it every daemon's announce to the attacker
    waits for its timeout, which holds up the announcer's next round (see `attack_notes`)."""

    def __init__(self, bind: str, keys: tuple[bytes, bytes], peers: dict[bytes, str]) -> None:
        super().__init__(daemon=True, name="quiet-member")
        self.bind, self.keys, self.peers = bind, keys, peers
        self.ready, self._stop_at = threading.Event(), threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._serve())
        except (SwarmError, zmq.ZMQError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()

    async def _serve(self) -> None:
        import asyncio

        from swarmd.transport import FetchOnly, Node

        node = Node(
            FetchOnly("not a leader"),
            bind=self.bind,
            public_key=self.keys[0],
            secret_key=self.keys[1],
            max_bytes=1 << 30,
        )
        async with node:
            node.set_peers(self.peers)
            self.ready.set()
            while not self._stop_at.is_set():
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        self._stop_at.set()
        self.join(10)


def flood_frames(r: int, term: int, version: int, n: int = FLOOD_FRAMES) -> list[bytes]:
    """`n` frames a member might send to hurt round `r`'s leader: malformed, and 1 in 25 expensive."""
    entry = {"name": "", "dtype": "float32", "shape": [1], "nbytes": 4}
    manifest = [{**entry, "name": f"t{i:06d}"} for i in range(5_000)]
    offer = {
        "v": version,
        "kind": "update",
        "req": 1,
        "round": r,
        "term": term,
        "digest": bytes(32),
        "meta": {},
    }
    cheap = [
        b"\xc1garbage",
        os.urandom(200),
        msgpack.packb({"v": version, "kind": "ping", "req": 1, "sent": [[[[]]]] * 2_000}),  # nested, 8 KiB
        msgpack.packb({"v": version, "kind": "announce", "req": 1, "round": r, "model_hash": os.urandom(32)}),
    ]
    expensive = [
        msgpack.packb({**offer, "manifest": [[]] * 60_000}),  # 60,000 nested empty arrays
        msgpack.packb(
            {"v": version, "kind": "ping", "req": 1, "sent": 0.0, "pad": "x" * 160_000}
        ),  # oversize
        msgpack.packb({**offer, "manifest": manifest}),  # a huge manifest, valid-looking
        msgpack.packb({**offer, "manifest": [entry] * 5_000}),  # a huge invalid one
    ]
    return [expensive[i // 25 % 4] if i % 25 == 0 else cheap[i % 4] for i in range(n)]


def _rejections(bind: str) -> dict[str, float]:
    """A daemon's `swarmd_rejections_total` by reason, from its Prometheus endpoint ({} if unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{bind}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "swarmd_rejections_total"
    }


class Attacker(threading.Thread):
    """Watches every round's election; floods the leader of each round in `flooded`."""

    def __init__(
        self,
        ledger: Ledger,
        rounds: int,
        flooded: list[int],
        members: dict[str, tuple[str, bytes]],
        keys: tuple[bytes, bytes],
        metrics: dict[str, str],
        version: int,
        deadline: float,
    ) -> None:
        """`members`: account -> (control endpoint, CURVE key) of each daemon; `keys`: the attacker's
        CURVE keys; `metrics`: account -> Prometheus host:port."""
        super().__init__(daemon=True, name="attacker")
        self.ledger, self.rounds, self.flooded = ledger, rounds, flooded
        self.members, self.keys, self.metrics = members, keys, metrics
        self.version, self.deadline = version, deadline
        self.dealers: dict[str, Dealer] = {}
        self.elections: dict[int, float] = {}  # round -> wall time the election was seen
        self.floods: dict[int, dict[str, Any]] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            frames = {r: flood_frames(r, 1, self.version) for r in self.flooded}
            for r in range(self.rounds):
                info = self._elected(r)
                if info is None:
                    continue
                if info.leader not in self.metrics:
                    continue
                before = _rejections(self.metrics[info.leader])  # in every round alike
                self.connect(info.leader)
                if r in self.flooded:
                    f = frames[r] if info.term == 1 else flood_frames(r, info.term, self.version)
                    self.floods[r] = self._flood(r, info.leader, f, before)
        except (SwarmError, zmq.ZMQError, OSError) as exc:  # reported with the result
            self.error = f"{type(exc).__name__}: {exc}"

    def _elected(self, r: int) -> RoundInfo | None:
        from swarmd.ledger import RoundStatus

        while time.monotonic() < self.deadline:
            cur = self.ledger.current_round()
            if cur > r:
                return None  # missed: the round is over already
            if cur == r and (info := self.ledger.round(r)).status == RoundStatus.ELECTED:
                self.elections[r] = time.time()
                return info
            time.sleep(WATCH_INTERVAL)
        return None

    def connect(self, account: str) -> Dealer:
        """A DEALER with the attacker's member key to `account`'s daemon, its handshake confirmed by a
        ping's answer (made when the round is elected, in every round alike)."""
        if account in self.dealers:
            return self.dealers[account]
        endpoint, key = self.members[account]
        for _ in range(5):
            d = Dealer(endpoint, key, self.keys)
            d.sock.send(msgpack.packb({"v": self.version, "kind": "ping", "req": 0, "sent": 0.0}))
            if d.sock.poll(2000):
                d.sock.recv_multipart()
                self.dealers[account] = d
                return d
            d.close()
        raise BenchFailed(f"no answer from {endpoint} to the attacker's ping")

    def close(self) -> None:
        for d in self.dealers.values():
            d.close()

    def _flood(self, r: int, leader: str, frames: list[bytes], before: dict[str, float]) -> dict[str, Any]:
        sock = self.dealers[leader].sock
        sock.sndtimeo = 10_000
        t0 = time.time()
        sent = 0
        with contextlib.suppress(zmq.Again):
            for f in frames:
                sock.send(f)
                sent += 1
        t1 = time.time()
        return {
            "leader": leader,
            "frames": sent,
            "bytes": sum(len(f) for f in frames[:sent]),
            "started": t0,
            "ended": t1,
            "send_s": round(t1 - t0, 3),
            "after_election_s": round(t0 - self.elections[r], 3),
            "rejections_before": before,
        }
