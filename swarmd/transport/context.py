"""What the two sides of a node share: the tunables (`Limits`), the counters (`NodeStats`) and one
`Context` (the handler, the member set, the ZeroMQ context, the node's tasks, the per-peer budgets)
with the few helpers both sides use: make a socket, send and count, spawn a task, count and log a
rejection (the log rate-limited per peer, so a flood cannot flood the log)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import zmq
import zmq.asyncio
from zmq.utils import z85

from swarmd.codec import MAX_TENSORS
from swarmd.errors import TransportError
from swarmd.transport import bulk as b
from swarmd.transport import messages as m
from swarmd.transport.budget import Budgets, Rates, TokenBucket
from swarmd.transport.handler import Handler, PeerId
from swarmd.transport.stream import SealBuffers

log = logging.getLogger("swarmd.transport")

# Rejections counted like any other but logged at info: the protocol's normal course, not a fault (an
# offer that came before the leader opened its exchange, a stream a peer stopped as its round moved on).
ROUTINE = frozenset({"not_ready", "cancelled"})

BulkMode = Literal["aead", "curve"]
OutFrame = bytes | memoryview  # one frame of an outgoing message


@dataclass(frozen=True)
class Limits:
    """Tunables; the defaults suit models of tens to hundreds of MB on a LAN or WAN."""

    chunk_size: int = 4 << 20
    window: int = 4  # chunks in flight per stream
    streams_per_peer: int = 2  # inbound update offers (active + queued) one peer may hold
    max_queued: int = 64  # inbound update offers waiting to be received, all peers together
    max_streams: int = 4  # inbound updates received at the same time
    max_inflight_bytes: int = 1 << 30  # their manifests' sizes together (one larger update runs alone)
    max_tensors: int = MAX_TENSORS  # a manifest listing more is refused before validation (the task's count)
    max_serves: int = 4  # models served at the same time
    serves_per_peer: int = 2  # of them, to one peer: a peer that stopped reading (dead) cannot take them all
    stall_timeout: float = 20.0  # a stream with no progress for this long is dropped
    # A connection to the bulk port that has not logged in (PLAIN, a member's token) by then is closed
    # and counted (`bulk_handshake`); libzmq's default let a silent one sit for 30 s.
    bulk_handshake_timeout: float = 1.0
    request_timeout: float = 30.0  # default wait for a reply, grant or serve
    heartbeat_ivl: float = 2.0
    heartbeat_timeout: float = 10.0
    reconnect_ivl: float = 0.1
    reconnect_ivl_max: float = 5.0
    # Per peer and second, on the control channel: beyond these a frame is dropped as `rate`.
    peer_messages: float = 500.0  # honest: ~100 (4 MiB chunks over CURVE at 0.4 GB/s) plus a few requests
    peer_bytes: float = float(1 << 30)
    peer_cpu: float = 0.2  # seconds spent decoding its frames (an offer of 1000 tensors takes ~5 ms)
    peer_burst_s: float = 2.0  # each bucket saves this many seconds' worth
    peer_log_lines: float = 1.0  # rejection log lines per peer and second (10 at once)

    @property
    def rates(self) -> Rates:
        return Rates(self.peer_messages, self.peer_bytes, self.peer_cpu, self.peer_burst_s)


@dataclass
class NodeStats:
    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    updates_received: int = 0
    models_served: int = 0
    handshakes_denied: int = 0
    disconnects: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    late_answers: int = 0  # answers to requests we had already ended (timed out, withdrawn)


@dataclass
class Context:
    """The state the front, the serving side and the client side of one node share."""

    handler: Handler
    limits: Limits
    max_bytes: int
    bulk_mode: BulkMode
    public: bytes  # our CURVE keys, z85
    secret: bytes
    stats: NodeStats = field(default_factory=NodeStats)
    members: dict[PeerId, str] = field(default_factory=dict)  # raw CURVE key -> endpoint
    labels: dict[PeerId, str] = field(default_factory=dict)  # member key -> name for log lines
    zmq_ctx: zmq.asyncio.Context | None = None  # while the node is started
    bulk_port: int | None = None  # of our bulk ROUTER, advertised in grants and serves
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    budgets: Budgets[PeerId] = field(default_factory=Budgets)
    bulk_tokens: dict[PeerId, bytes] = field(default_factory=dict)  # members' passwords on our bulk port
    seal_buffers: SealBuffers = field(default_factory=SealBuffers)  # sealed chunks' ciphertext, reused
    _log_buckets: dict[PeerId | None, TokenBucket] = field(default_factory=dict)
    _log_suppressed: Counter[PeerId | None] = field(default_factory=Counter)

    @property
    def public_id(self) -> PeerId:
        """Our raw CURVE public key: the id peers know us by."""
        return z85.decode(self.public)

    @property
    def max_frame(self) -> int:
        """`maxmsgsize` of a control socket: an offer's header with a manifest of `max_tensors` tensors,
        or a chunk; anything bigger drops the link (a stranger's handshake frame included). Sockets
        take it when made, so pass `max_tensors` to the Node rather than through set_limits."""
        lim = self.limits
        return max(m.max_header("update", lim.max_tensors), lim.chunk_size + 4096)

    @property
    def max_bulk_frame(self) -> int:
        """`maxmsgsize` of a bulk socket: exactly a sealed chunk; a larger frame drops the link unread."""
        return b.max_frame(self.limits.chunk_size)

    def is_member(self, peer: PeerId) -> bool:
        return peer in self.members

    def socket(self, kind: int, *, bulk: bool = False) -> zmq.asyncio.Socket:
        if self.zmq_ctx is None:
            raise TransportError("node is not started")
        s = self.zmq_ctx.socket(kind)
        lim = self.limits
        s.linger = 0
        s.maxmsgsize = self.max_bulk_frame if bulk else self.max_frame
        s.sndhwm = s.rcvhwm = 10_000  # counted in messages; bulk volume is bounded by credits
        if bulk:  # per connection (members only, see node.py): a peer's streams' chunks in flight, and grants
            s.rcvhwm = lim.streams_per_peer * lim.window + 4
        s.heartbeat_ivl = int(lim.heartbeat_ivl * 1000)
        s.heartbeat_timeout = int(lim.heartbeat_timeout * 1000)
        s.heartbeat_ttl = int(lim.heartbeat_timeout * 1000)
        s.reconnect_ivl = int(lim.reconnect_ivl * 1000)
        s.reconnect_ivl_max = int(lim.reconnect_ivl_max * 1000)
        if kind == zmq.ROUTER:
            s.router_mandatory = True  # a send to a vanished peer raises instead of vanishing
        return s

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Run `coro` as one of the node's tasks (`close` cancels them)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def reject(self, reason: str, peer: PeerId | None, detail: str) -> None:
        """Count a bad input under `reason`; log it within the peer's log budget (strangers share one), at
        warning unless it is ROUTINE."""
        self.stats.rejections[reason] += 1
        n = self.stats.rejections[reason]
        key = peer if peer in self.members else None  # the buckets stay bounded by the member set
        bucket = self._log_buckets.setdefault(key, TokenBucket(10.0))
        rate = self.limits.peer_log_lines
        if not bucket.take(1, rate, 10 * rate, time.monotonic()):
            self._log_suppressed[key] += 1
            return
        quiet = self._log_suppressed.pop(key, 0)
        who = (self.labels.get(peer) or z85.encode(peer).decode()[:12]) if peer else "?"
        more = f"; {quiet} more from this peer not logged" if quiet else ""
        level = logging.INFO if reason in ROUTINE else logging.WARNING
        log.log(level, "rejected from %s: %s #%d (%s)%s", who, reason, n, detail[:200], more)

    def bulk_token(self, peer: PeerId) -> bytes:
        """The password `peer` connects to our bulk port with (handed to it over CURVE)."""
        token = self.bulk_tokens.get(peer)
        if token is None:
            token = self.bulk_tokens[peer] = os.urandom(32)
        return token

    def bulk_login_ok(self, username: str, password: str) -> bool:
        """ZAP's PLAIN check on the bulk port: a member's id (hex) and the token we handed it."""
        try:
            token = self.bulk_tokens.get(bytes.fromhex(username))
            return token is not None and hmac.compare_digest(token, bytes.fromhex(password))
        except ValueError:
            return False

    def forget_outside(self, members: Mapping[PeerId, str]) -> None:
        """Drop the budgets and bulk passwords of peers that are no longer members."""
        self.budgets.forget_outside(members)
        for peer in [k for k in self.bulk_tokens if k not in members]:
            del self.bulk_tokens[peer]
        for key in [k for k in self._log_buckets if k is not None and k not in members]:
            del self._log_buckets[key]
            self._log_suppressed.pop(key, None)

    def count_in(self, frames: Sequence[zmq.Frame]) -> None:
        self.stats.messages_in += 1
        self.stats.bytes_in += sum(len(f) for f in frames)

    async def send(
        self,
        sock: zmq.asyncio.Socket,
        frames: Sequence[OutFrame],
        route: bytes | None = None,
        *,
        track: bool = False,
    ) -> zmq.MessageTracker | None:
        """Send one message zero-copy and count it; with `track`, the tracker that tells when libzmq is
        done with its frames (until then their buffers must not change)."""
        parts = [route, *frames] if route is not None else list(frames)
        self.stats.messages_out += 1
        self.stats.bytes_out += sum(
            memoryview(p).nbytes if not isinstance(p, bytes) else len(p) for p in parts
        )
        tracker = await sock.send_multipart(parts, copy=False, track=track)
        return tracker if track else None

    async def send_quietly(self, sock: zmq.asyncio.Socket, msg: m.Message) -> None:
        """Send a message nobody waits on (a cancel); a vanished peer is no error here."""
        with contextlib.suppress(zmq.ZMQError):
            await self.send(sock, [m.encode(msg)])
