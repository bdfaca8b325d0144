"""The transport node: one asyncio object that owns this site's ZeroMQ sockets.

Sockets:
- control ROUTER, bound on the site endpoint, CURVE server. A ZAP handler admits only the CURVE keys
  of current members (`set_peers`); a non-member never gets past the handshake. Every message is
  checked again against the member set, because ZAP only runs when a connection is made.
- one control DEALER per peer, CURVE client with the peer's key from the ledger. Requests go out on
  it; the peer's answers come back on it. The daemon can send an update while receiving others.
- bulk ROUTER (and one bulk DEALER per peer, made on first use), plain TCP: it carries only chunks
  sealed with ChaCha20-Poly1305 under a random per-stream key that travelled over CURVE, plus the
  credit grants of those streams (see stream.py and docs/transport.md for why).

Inbound update streams take one slot at a time (FIFO), so the receiver holds about one payload
whatever the number of senders; the others wait for their first grant. Every bad input is logged,
counted in `stats.rejections[reason]` and dropped; it never ends the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from swarmd import codec
from swarmd.aio import wait_within
from swarmd.codec import Manifest
from swarmd.errors import HashMismatch, IdentityError, PeerRejected, TransportError
from swarmd.transport import messages as m
from swarmd.transport.handler import AnnounceHeader, Handler, PeerId, UpdateHeader, Verdict
from swarmd.transport.messages import Refusal
from swarmd.transport.stream import Inbound, Outbound, iter_chunks, new_key, new_sid

log = logging.getLogger("swarmd.transport")

BulkMode = Literal["aead", "curve"]
ZAP_DOMAIN = "swarmd"


@dataclass(frozen=True)
class Limits:
    """Tunables; the defaults suit models of tens to hundreds of MB on a LAN or WAN."""

    chunk_size: int = 4 << 20
    window: int = 4  # chunks in flight per stream
    streams_per_peer: int = 2  # inbound update offers (active + queued) one peer may hold
    max_queued: int = 64  # inbound update offers waiting for the slot, all peers together
    max_serves: int = 4  # models served at the same time
    stall_timeout: float = 20.0  # a stream with no progress for this long is dropped
    request_timeout: float = 30.0  # default wait for a reply, grant or serve
    heartbeat_ivl: float = 2.0
    heartbeat_timeout: float = 10.0
    reconnect_ivl: float = 0.1
    reconnect_ivl_max: float = 5.0


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


class _Conn:
    """Our side of the sockets to one peer: control DEALER, optional bulk DEALER, pending requests."""

    def __init__(
        self, key: PeerId, endpoint: str, control: zmq.asyncio.Socket, mon: zmq.asyncio.Socket
    ) -> None:
        self.key = key
        self.endpoint = endpoint
        self.control = control
        self.mon = mon
        self.bulk: zmq.asyncio.Socket | None = None
        self.bulk_port: int | None = None
        self.pending: dict[int, asyncio.Queue[tuple[m.Message, list[zmq.Frame]]]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.refused: str | None = None  # set by the monitor when the peer refuses our handshake


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def _z85_bytes(key: str | bytes) -> bytes:
    return key.encode("ascii") if isinstance(key, str) else key


def _curve_key(z85_key: bytes) -> bytes:
    """The 32 raw bytes of a z85 CURVE key (40 characters); IdentityError if it is not one."""
    try:
        raw = z85.decode(z85_key) if len(z85_key) == 40 else b""
    except (ValueError, KeyError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise IdentityError(
            "a CURVE key must be 40 z85 characters", hint="see `swarm init` / zmq.curve_keypair()"
        )
    return raw


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _raise_if_sentinel(conn: _Conn, msg: m.Message) -> None:
    """Local events posted to pending requests as req-0 replies become errors for the caller."""
    if not isinstance(msg, m.Reply) or msg.req != 0:
        return
    if msg.reason == Refusal.REFUSED:
        raise PeerRejected(conn.refused or "handshake refused by the peer")
    if msg.reason == Refusal.PEER_REMOVED:
        raise PeerRejected("peer was removed from the member set")
    raise TransportError(f"connection to peer lost ({msg.reason})", hint="it may have crashed or restarted")


class Node:
    """One site's transport. Use `async with Node(...) as node:` or `await start()` / `await close()`."""

    def __init__(
        self,
        handler: Handler,
        *,
        bind: str,
        public_key: str | bytes,
        secret_key: str | bytes,
        max_bytes: int,
        limits: Limits | None = None,
        bulk: BulkMode = "aead",
        bulk_bind: str | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.max_bytes = max_bytes
        self.bulk_mode = bulk
        self.stats = NodeStats()
        self._bind = bind
        self._bulk_bind = bulk_bind
        self._public = _z85_bytes(public_key)
        self._secret = _z85_bytes(secret_key)
        self.peer_id: PeerId = _curve_key(self._public)
        _curve_key(self._secret)
        self._members: dict[PeerId, str] = {}
        self._conns: dict[PeerId, _Conn] = {}
        self._inbound: dict[bytes, Inbound] = {}
        # Streams that ended early: their chunks still in flight are dropped without a second count.
        self._ended: deque[bytes] = deque(maxlen=256)
        self._outbound: dict[bytes, Outbound] = {}
        self._streams_of: Counter[PeerId] = Counter()
        self._queued = 0
        self._slot = asyncio.Lock()  # asyncio.Lock wakes waiters in FIFO order
        self._serves = asyncio.Semaphore(self.limits.max_serves)
        self._req = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._router_mon: zmq.asyncio.Socket | None = None
        self._bulk_router: zmq.asyncio.Socket | None = None
        self.endpoint = ""
        self.bulk_port: int | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the sockets and start serving; raise TransportError (and release everything) if not."""
        try:
            self._open()
        except BaseException:
            await self.close()
            raise

    def _open(self) -> None:
        self._ctx = zmq.asyncio.Context()
        self._auth = AsyncioAuthenticator(self._ctx, log=logging.getLogger("swarmd.transport.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)
        self._router = self._socket(zmq.ROUTER)
        self._router.curve_server = True
        self._router.curve_publickey = self._public
        self._router.curve_secretkey = self._secret
        self._router.zap_domain = ZAP_DOMAIN.encode()
        self.endpoint = self._bind_socket(self._router, self._bind)
        self._spawn(self._router_loop())
        self._router_mon = self._router.get_monitor_socket()
        self._spawn(self._monitor_loop(self._router_mon, None))
        if self.bulk_mode == "aead":
            self._bulk_router = self._socket(zmq.ROUTER)
            ep = self._bind_socket(self._bulk_router, self._bulk_bind or self._default_bulk_bind())
            self.bulk_port = int(ep.rsplit(":", 1)[1])
            self._spawn(self._bulk_router_loop())
        log.info("transport listening on %s (bulk port %s)", self.endpoint, self.bulk_port)

    async def close(self) -> None:
        # Stop monitors while their readers are open: libzmq blocks sending the final event otherwise.
        if self._router is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._router.disable_monitor()
        for conn in self._conns.values():
            with contextlib.suppress(zmq.ZMQError):
                conn.control.disable_monitor()
        for task in list(self._tasks):
            task.cancel()
        for conn in self._conns.values():
            for task in conn.tasks:
                task.cancel()
        await asyncio.gather(
            *self._tasks, *(t for c in self._conns.values() for t in c.tasks), return_exceptions=True
        )
        for conn in self._conns.values():
            self._close_conn_sockets(conn)
        self._conns.clear()
        if self._router_mon is not None:
            self._router_mon.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
        # closing twice (a failed start, then the caller's close) must be harmless
        self._router = self._router_mon = self._bulk_router = None
        self._auth, self._ctx = None, None

    @property
    def max_frame(self) -> int:
        """`maxmsgsize` of every socket: a header or a sealed chunk fits, anything bigger drops the link."""
        return max(m.MAX_HEADER_BYTES, self.limits.chunk_size + 4096)

    def _default_bulk_bind(self) -> str:
        host, port = self._bind.rsplit(":", 1)
        return f"{host}:{int(port) + 1}" if port.isdigit() and int(port) > 0 else f"{host}:*"

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        if self._ctx is None:
            raise TransportError("node is not started")
        s = self._ctx.socket(kind)
        lim = self.limits
        s.linger = 0
        s.maxmsgsize = self.max_frame
        s.sndhwm = s.rcvhwm = 10_000  # counted in messages; bulk volume is bounded by credits
        s.heartbeat_ivl = int(lim.heartbeat_ivl * 1000)
        s.heartbeat_timeout = int(lim.heartbeat_timeout * 1000)
        s.heartbeat_ttl = int(lim.heartbeat_timeout * 1000)
        s.reconnect_ivl = int(lim.reconnect_ivl * 1000)
        s.reconnect_ivl_max = int(lim.reconnect_ivl_max * 1000)
        if kind == zmq.ROUTER:
            s.router_mandatory = True  # a send to a vanished peer raises instead of vanishing
        return s

    def _bind_socket(self, s: zmq.asyncio.Socket, endpoint: str) -> str:
        try:
            s.bind(endpoint)
        except zmq.ZMQError as exc:
            raise TransportError(f"cannot bind {endpoint}: {exc}") from exc
        last = s.last_endpoint
        return last.decode() if isinstance(last, bytes) else str(last)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- membership -------------------------------------------------------------------------------
    def set_peers(self, peers: Mapping[PeerId, str]) -> None:
        """Replace the member set: {raw CURVE public key: endpoint}. Takes effect for new handshakes
        at once, for messages on open connections at once, and drops connections to removed peers."""
        new = {bytes(k): v for k, v in peers.items()}
        for key in [k for k, c in self._conns.items() if new.get(k) != c.endpoint]:
            self._drop_conn(key)
        for stream in self._inbound.values():
            if stream.peer not in new and stream.failed is None:
                self._reject(
                    "not_member", stream.peer, "an open stream's sender was removed from the members"
                )
                stream.fail("not_member")
        self._members = new

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials provider: admit a CURVE key only if it belongs to a current member."""
        try:
            allowed = z85.decode(key) in self._members
        except ValueError:
            allowed = False
        if not allowed:
            self.stats.handshakes_denied += 1
            log.warning("refused a CURVE handshake from a non-member key %s", key[:12])
        return allowed

    def _is_member(self, peer: PeerId) -> bool:
        return peer in self._members

    # --- rejections -------------------------------------------------------------------------------
    def _reject(self, reason: str, peer: PeerId | None, detail: str) -> None:
        self.stats.rejections[reason] += 1
        n = self.stats.rejections[reason]
        if n <= 10 or n & (n - 1) == 0:  # a flood of bad frames must not flood the log too
            who = z85.encode(peer).decode()[:12] if peer else "?"
            log.warning("rejected from %s: %s #%d (%s)", who, reason, n, detail[:200])

    # --- server side: control ROUTER --------------------------------------------------------------
    async def _router_loop(self) -> None:
        sock = self._router
        if sock is None:
            return
        while True:
            frames = await sock.recv_multipart(copy=False)
            self._count_in(frames)
            try:
                await self._on_router(frames)
            except m.BadMessage as exc:
                self._reject(exc.reason, self._user(frames), str(exc))
            except zmq.ZMQError as exc:
                self._reject("unroutable", None, str(exc))
            except Exception as exc:  # the loop must outlive any bug: a dead loop is a deaf node
                log.exception("unexpected error on the control socket")
                self._reject("internal_error", self._user(frames), repr(exc))

    def _user(self, frames: list[zmq.Frame]) -> PeerId | None:
        try:
            return z85.decode(str(frames[1].get("User-Id")))
        except (ValueError, IndexError, zmq.ZMQError):
            return None

    def _count_in(self, frames: Sequence[zmq.Frame]) -> None:
        self.stats.messages_in += 1
        self.stats.bytes_in += sum(len(f) for f in frames)

    async def _send(self, sock: zmq.asyncio.Socket, frames: list[Any], route: bytes | None = None) -> None:
        parts = [route, *frames] if route is not None else frames
        self.stats.messages_out += 1
        self.stats.bytes_out += sum(
            memoryview(p).nbytes if not isinstance(p, bytes) else len(p) for p in parts
        )
        await sock.send_multipart(parts, copy=False)

    async def _reply(self, rid: bytes, msg: m.Message) -> None:
        await self._send(self._router, [m.encode(msg)], rid)  # type: ignore[arg-type]

    async def _on_router(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            raise m.BadMessage("bad_header", "message without a header frame")
        rid, peer = frames[0].bytes, self._user(frames)
        if peer is None or not self._is_member(peer):
            raise m.BadMessage("not_member", "message from a key that is no longer a member")
        msg = m.decode(frames[1].buffer)
        data = [f.buffer for f in frames[2:]]
        if data and not isinstance(msg, m.Chunk):
            raise m.BadMessage("bad_header", f"{msg.KIND} carries unexpected data frames")
        if isinstance(msg, m.Ping):
            await self._reply(rid, m.Pong(msg.req, msg.sent))
        elif isinstance(msg, m.Announce):
            self._spawn(self._on_announce(rid, peer, msg))
        elif isinstance(msg, m.UpdateOffer):
            self._admit_update(rid, peer, msg)
        elif isinstance(msg, m.Fetch):
            self._spawn(self._serve_fetch(rid, peer, msg))
        elif isinstance(msg, m.Chunk):
            self._on_chunk(msg, data, via_bulk=False, peer=peer)
        elif isinstance(msg, m.Grant):
            if not self._on_grant(msg, peer=peer):
                raise m.BadMessage("unknown_stream", "grant for no open stream")
        elif isinstance(msg, m.Cancel):
            self._on_cancel(peer, msg)
        else:
            raise m.BadMessage("unexpected_kind", f"{msg.KIND} is not a request")

    def _on_cancel(self, peer: PeerId, msg: m.Cancel) -> None:
        """A sender withdrawing its update, or a fetcher abandoning a model we serve to it."""
        stream: Inbound | Outbound | None = self._inbound.get(msg.sid) or self._outbound.get(msg.sid)
        if stream is None or stream.peer != peer:
            raise m.BadMessage("unknown_stream", "cancel for no open stream")
        self._reject("cancelled", peer, msg.reason)
        stream.fail("cancelled")

    async def _on_announce(self, rid: bytes, peer: PeerId, msg: m.Announce) -> None:
        try:
            await self.handler.on_announce(peer, AnnounceHeader(msg.round, msg.model_hash))
            await self._reply(rid, m.Reply(msg.req, True))
        except zmq.ZMQError as exc:
            self._reject("unroutable", peer, str(exc))
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("announce handler failed")
            self._reject("handler_error", peer, repr(exc))
            with contextlib.suppress(zmq.ZMQError):
                await self._reply(rid, m.Reply(msg.req, False, Refusal.HANDLER_ERROR))

    # --- server side: inbound updates --------------------------------------------------------------
    def _admit_update(self, rid: bytes, peer: PeerId, msg: m.UpdateOffer) -> None:
        total = msg.manifest.total_nbytes
        early = self._check_offer(peer, msg)
        reason: Refusal | None
        if total > self.max_bytes:
            reason, detail = Refusal.TOO_LARGE, f"update of {total} bytes, limit {self.max_bytes}"
        elif not early.ok:
            reason, detail = early.reason or Refusal.HANDLER_ERROR, early.detail
        elif self._streams_of[peer] >= self.limits.streams_per_peer:
            reason, detail = Refusal.STREAM_CAP, f"peer already holds {self._streams_of[peer]} update streams"
        elif self._queued >= self.limits.max_queued:
            reason, detail = Refusal.BUSY, "too many updates waiting"
        else:
            self._streams_of[peer] += 1
            self._queued += 1
            self._spawn(self._receive_update(rid, peer, msg))
            return
        self._reject(reason, peer, detail)
        self._spawn(self._reply_quietly(rid, m.Reply(msg.req, False, reason, detail)))

    def _check_offer(self, peer: PeerId, msg: m.UpdateOffer) -> Verdict:
        """The handler's early look at an offer (`check_offer`), before any byte moves."""
        try:
            verdict = self.handler.check_offer(
                peer, UpdateHeader(msg.round, msg.term, msg.digest, msg.manifest, msg.meta)
            )
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("check_offer failed")
            return Verdict(False, Refusal.HANDLER_ERROR, repr(exc)[:200])
        if not isinstance(verdict, Verdict):
            return Verdict(False, Refusal.HANDLER_ERROR, f"check_offer returned {type(verdict).__name__}")
        return verdict

    async def _send_quietly(self, sock: zmq.asyncio.Socket, msg: m.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            await self._send(sock, [m.encode(msg)])

    async def _reply_quietly(self, rid: bytes, msg: m.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            await self._reply(rid, msg)

    async def _receive_update(self, rid: bytes, peer: PeerId, msg: m.UpdateOffer) -> None:
        try:
            async with self._slot:
                self._queued -= 1
                try:
                    verdict = await self._stream_update(rid, peer, msg)
                except Exception as exc:  # e.g. no memory for the buffer: refuse this one, keep serving
                    log.exception("receiving an update failed")
                    self._reject("internal_error", peer, repr(exc))
                    verdict = Verdict(False, Refusal.INTERNAL_ERROR)
                await self._reply_quietly(rid, m.Reply(msg.req, verdict.ok, verdict.reason, verdict.detail))
        finally:
            self._streams_of[peer] -= 1
            if self._streams_of[peer] <= 0:
                del self._streams_of[peer]

    async def _stream_update(self, rid: bytes, peer: PeerId, msg: m.UpdateOffer) -> Verdict:
        key = new_key() if self.bulk_mode == "aead" else None
        stream = Inbound(new_sid(), peer, msg.manifest, self.limits.chunk_size, key)

        async def grant(n: int, first: bool) -> None:
            g = m.Grant(msg.req, stream.sid, n, key if first else None, self.bulk_port if first else None)
            if first or key is None:
                await self._reply(rid, g)
            else:
                await self._send(self._bulk_router, [m.encode(g)], stream.route)  # type: ignore[arg-type]

        failure = await self._run_inbound(stream, grant)
        if failure is not None:
            return Verdict(False, failure, stream.failed or "")  # the detail names the violation
        digest = await stream.digest()
        if digest != msg.digest:
            self._reject(
                "hash_mismatch", peer, f"got {codec.hash_hex(digest)}, claimed {codec.hash_hex(msg.digest)}"
            )
            return Verdict(False, Refusal.HASH_MISMATCH, codec.hash_hex(digest))
        state = codec.decode_flat(msg.manifest, stream.view)
        self.stats.updates_received += 1
        header = UpdateHeader(msg.round, msg.term, msg.digest, msg.manifest, msg.meta)
        try:
            verdict = await self.handler.on_update(peer, header, state, digest)
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("update handler failed")
            self._reject("handler_error", peer, repr(exc))
            return Verdict(False, Refusal.HANDLER_ERROR)
        if not isinstance(verdict, Verdict):
            self._reject("handler_error", peer, f"on_update returned {type(verdict).__name__}, not a Verdict")
            return Verdict(False, Refusal.HANDLER_ERROR)
        return verdict

    async def _run_inbound(
        self, stream: Inbound, grant: Callable[[int, bool], Awaitable[None]]
    ) -> Refusal | None:
        """Drive a receive: grant credits as chunks land, watch for stalls. Returns a failure reason."""
        if stream.sid in self._inbound:  # a sender-chosen sid (fetch) colliding with a live stream
            self._reject("duplicate_stream", stream.peer, "stream id already in use")
            return Refusal.DUPLICATE_STREAM
        self._inbound[stream.sid] = stream
        first = True
        try:
            while True:
                stream.wake.clear()  # before granting: a chunk landing during the grant re-arms it
                if stream.done.is_set():
                    return m.as_refusal(stream.failed) if stream.failed else None
                n = stream.credits_to_grant(self.limits.window)
                if n:
                    stream.granted += n
                    await grant(n, first)
                    first = False
                    stream.last_progress = time.monotonic()
                idle = time.monotonic() - stream.last_progress
                if idle >= self.limits.stall_timeout:
                    self._reject("stalled", stream.peer, f"no chunk for {self.limits.stall_timeout:.1f}s")
                    return Refusal.STALLED
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_within(stream.wake.wait(), self.limits.stall_timeout - idle)
        except zmq.ZMQError as exc:
            self._reject("unroutable", stream.peer, str(exc))
            return Refusal.UNROUTABLE
        finally:
            self._inbound.pop(stream.sid, None)
            if stream.failed is not None or not stream.done.is_set():
                self._ended.append(stream.sid)

    def _on_chunk(
        self,
        msg: m.Chunk,
        data: list[memoryview],
        *,
        via_bulk: bool,
        peer: PeerId | None = None,
        route: bytes | None = None,
    ) -> None:
        """A chunk from the control channel (`peer` known) or the bulk channel (sealed, `route` known)."""
        stream = self._inbound.get(msg.sid)
        if (stream is not None and stream.failed is not None) or (stream is None and msg.sid in self._ended):
            return  # residue of a stream that already failed (and was counted once)
        if stream is None:
            raise m.BadMessage("unknown_stream", "chunk for no open stream")
        if via_bulk != (stream.key is not None) or (peer is not None and peer != stream.peer):
            raise m.BadMessage("unknown_stream", "chunk on the wrong channel or from the wrong peer")
        try:
            stream.accept(msg.seq, data)
        except m.BadMessage as exc:
            stream.fail(exc.reason)
            raise
        if route is not None:
            stream.route = route

    def _on_grant(self, msg: m.Grant, *, peer: PeerId | None = None, route: bytes | None = None) -> bool:
        """Credit for one of our outbound streams; False if it names none (a first grant, by req)."""
        out = self._outbound.get(msg.sid)
        if out is None:
            return False
        if peer is not None and out.peer != peer:
            raise m.BadMessage("unknown_stream", "grant for no open stream")
        if route is not None:
            out.route = route
        out.grant(msg.credits)
        return True

    # --- server side: bulk ROUTER (sealed chunks and their grants only) -----------------------------
    async def _bulk_router_loop(self) -> None:
        sock = self._bulk_router
        if sock is None:
            return
        while True:
            frames = await sock.recv_multipart(copy=False)
            self._count_in(frames)
            try:
                if len(frames) < 2:
                    raise m.BadMessage("bad_header", "message without a header frame")
                route, msg = frames[0].bytes, m.decode(frames[1].buffer)
                data = [f.buffer for f in frames[2:]]
                if isinstance(msg, m.Chunk):
                    self._on_chunk(msg, data, via_bulk=True, route=route)
                elif isinstance(msg, m.Grant) and not data:
                    if not self._on_grant(msg, route=route):
                        raise m.BadMessage("unknown_stream", "grant for no open stream")
                else:
                    raise m.BadMessage("unexpected_kind", f"{msg.KIND} on the bulk channel")
            except m.BadMessage as exc:
                self._reject(exc.reason, None, str(exc))
            except Exception as exc:  # the loop must outlive any bug: a dead loop is a deaf node
                log.exception("unexpected error on the bulk socket")
                self._reject("internal_error", None, repr(exc))

    # --- server side: serving models ---------------------------------------------------------------
    async def _serve_fetch(self, rid: bytes, peer: PeerId, msg: m.Fetch) -> None:
        try:
            async with self._serves:
                reason = await self._serve_model(rid, peer, msg)
        except zmq.ZMQError as exc:
            reason = Refusal.UNROUTABLE
            self._reject(reason, peer, str(exc))
        # A fetcher that cancelled no longer waits for a reply.
        if reason is not None and reason != Refusal.CANCELLED:
            await self._reply_quietly(rid, m.Reply(msg.req, False, reason))

    async def _serve_model(self, rid: bytes, peer: PeerId, msg: m.Fetch) -> Refusal | None:
        """Stream a held model to a fetching peer; return why it failed, or None when all was sent."""
        try:
            payload = self.handler.serve_model(msg.model_hash)
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("serve_model failed")
            self._reject("handler_error", peer, repr(exc))
            return Refusal.HANDLER_ERROR
        if payload is None:
            return Refusal.NOT_FOUND
        manifest, frames = payload
        if manifest.total_nbytes > msg.max_bytes:
            return Refusal.TOO_LARGE
        if msg.key is not None and self._bulk_router is None:
            return Refusal.NO_BULK_CHANNEL
        out = Outbound(new_sid(), peer, msg.key)
        self._outbound[out.sid] = out
        try:
            await self._reply(rid, m.Serve(msg.req, out.sid, manifest, self.bulk_port if msg.key else None))

            async def send(frames_: list[Any]) -> None:
                if msg.key is None:
                    await self._send(self._router, frames_, rid)  # type: ignore[arg-type]
                else:
                    await self._send(self._bulk_router, frames_, out.route)  # type: ignore[arg-type]

            await self._pump(out, frames, send)
            self.stats.models_served += 1
            return None
        except (TimeoutError, asyncio.TimeoutError):
            self._reject("stalled", peer, "fetching peer stopped granting credit")
            return Refusal.STALLED
        except m.BadMessage as exc:
            return m.as_refusal(exc.reason)
        finally:
            self._outbound.pop(out.sid, None)

    async def _pump(
        self, out: Outbound, frames: Sequence[memoryview], send: Callable[[list[Any]], Awaitable[None]]
    ) -> None:
        """Send every chunk of a payload, each after taking one credit from the receiver."""
        for seq, pieces in enumerate(iter_chunks(frames, self.limits.chunk_size)):
            await out.take(self.limits.stall_timeout)
            await send([m.encode(m.Chunk(out.sid, seq)), *out.seal(seq, pieces)])

    # --- monitors ---------------------------------------------------------------------------------
    async def _monitor_loop(self, mon: zmq.asyncio.Socket, conn: _Conn | None) -> None:
        failed = {
            zmq.EVENT_HANDSHAKE_FAILED_AUTH,
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
        }
        while True:
            event = parse_monitor_message(await mon.recv_multipart())
            if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.stats.disconnects += 1
                if conn is not None:  # the peer died or restarted: what we wait for will not come
                    for q in conn.pending.values():
                        q.put_nowait((m.Reply(0, False, Refusal.DISCONNECTED), []))
            elif conn is not None and event["event"] in failed:
                conn.refused = "handshake refused by the peer (not a member there, or a key mismatch)"
                for q in conn.pending.values():
                    q.put_nowait((m.Reply(0, False, Refusal.REFUSED), []))
            elif conn is not None and event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                conn.refused = None

    # --- client side: connections to peers ---------------------------------------------------------
    def _conn(self, peer: PeerId) -> _Conn:
        conn = self._conns.get(peer)
        if conn is not None:
            return conn
        endpoint = self._members.get(peer)
        if endpoint is None:
            raise PeerRejected("not a member: no endpoint known for this peer")
        sock = self._socket(zmq.DEALER)
        sock.curve_serverkey = peer
        sock.curve_publickey = self._public
        sock.curve_secretkey = self._secret
        mon = sock.get_monitor_socket()
        sock.connect(endpoint)
        conn = _Conn(peer, endpoint, sock, mon)
        conn.tasks.append(asyncio.ensure_future(self._dealer_loop(conn, sock, via_bulk=False)))
        conn.tasks.append(asyncio.ensure_future(self._monitor_loop(mon, conn)))
        self._conns[peer] = conn
        return conn

    def _bulk(self, conn: _Conn, port: int) -> zmq.asyncio.Socket:
        if conn.bulk is not None and conn.bulk_port == port:
            return conn.bulk
        if conn.bulk is not None:
            conn.bulk.close(linger=0)
        sock = self._socket(zmq.DEALER)
        sock.connect(f"{_host(conn.endpoint)}:{port}")
        conn.bulk, conn.bulk_port = sock, port
        conn.tasks.append(asyncio.ensure_future(self._dealer_loop(conn, sock, via_bulk=True)))
        return sock

    def _drop_conn(self, peer: PeerId) -> None:
        conn = self._conns.pop(peer, None)
        if conn is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            conn.control.disable_monitor()  # before its reader closes (see close())
        for task in conn.tasks:
            task.cancel()
        for q in conn.pending.values():
            q.put_nowait((m.Reply(0, False, Refusal.PEER_REMOVED), []))
        self._close_conn_sockets(conn)

    @staticmethod
    def _close_conn_sockets(conn: _Conn) -> None:
        conn.control.close(linger=0)
        conn.mon.close(linger=0)
        if conn.bulk is not None:
            conn.bulk.close(linger=0)

    async def _dealer_loop(self, conn: _Conn, sock: zmq.asyncio.Socket, *, via_bulk: bool) -> None:
        """Answers from one peer: chunks and grants of open streams, else by request id."""
        while True:
            frames = await sock.recv_multipart(copy=False)
            self._count_in(frames)
            try:
                msg = m.decode(frames[0].buffer)
                data = [f.buffer for f in frames[1:]]
                if isinstance(msg, m.Chunk):
                    self._on_chunk(msg, data, via_bulk=via_bulk, peer=conn.key)
                elif isinstance(msg, m.Grant) and self._on_grant(msg, peer=conn.key):
                    pass
                elif isinstance(msg, m.Pong | m.Reply | m.Grant | m.Serve) and not via_bulk:
                    q = conn.pending.get(msg.req)
                    if q is None:
                        if isinstance(msg, m.Grant):
                            # We gave up on this offer (it waited too long for the receiver's slot);
                            # without a cancel the receiver would hold the slot until its stall timeout.
                            cancel = m.Cancel(msg.sid, "offer withdrawn")
                            self._spawn(self._send_quietly(conn.control, cancel))
                        raise m.BadMessage("unknown_request", f"{msg.KIND} for no pending request")
                    q.put_nowait((msg, frames[1:]))
                else:
                    raise m.BadMessage("unexpected_kind", f"{msg.KIND} is not an answer")
            except m.BadMessage as exc:
                self._reject(exc.reason, conn.key, str(exc))
            except Exception as exc:  # the loop must outlive any bug: a dead loop is a deaf connection
                log.exception("unexpected error on a peer connection")
                self._reject("internal_error", conn.key, repr(exc))

    async def _request(
        self, peer: PeerId, msg: m.Message, timeout: float | None = None
    ) -> tuple[_Conn, asyncio.Queue[Any]]:
        """Queue `msg` on the peer's control DEALER; return where its answers will arrive.

        A DEALER without a live connection blocks the send: the peer is down, or it refused our
        handshake and libzmq dropped the pipe. The monitor posts such events to the pending
        queue, so the send is raced against it and bounded by the request timeout."""
        conn = self._conn(peer)
        if conn.refused:
            raise PeerRejected(conn.refused)
        req: int = msg.req  # type: ignore[attr-defined]
        q: asyncio.Queue[Any] = asyncio.Queue()
        conn.pending[req] = q
        send = asyncio.ensure_future(self._send(conn.control, [m.encode(msg)]))
        event = asyncio.ensure_future(q.get())
        try:
            await asyncio.wait(
                {send, event},
                timeout=timeout or self.limits.request_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if event.done():
                early = event.result()
                _raise_if_sentinel(conn, early[0])
                q.put_nowait(early)  # not a sentinel: the answer itself, keep it for the caller
            if not send.done():
                if conn.refused:
                    raise PeerRejected(conn.refused)
                raise TransportError(
                    "cannot reach peer", hint="is it up, reachable, and does it list this site as a member?"
                )
            send.result()
        except BaseException:
            conn.pending.pop(req, None)
            raise
        finally:
            for fut in (send, event):
                if not fut.done():
                    fut.cancel()
        return conn, q

    async def _answer(self, conn: _Conn, q: asyncio.Queue[Any], timeout: float | None) -> m.Message:
        if conn.refused:
            raise PeerRejected(conn.refused)
        try:
            msg, _ = await wait_within(q.get(), timeout or self.limits.request_timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise TransportError(
                "no answer from peer", hint="is it up, reachable, and does it list this site as a member?"
            ) from exc
        _raise_if_sentinel(conn, msg)
        return msg

    def _new_req(self) -> int:
        return next(self._req)

    # --- client API ---------------------------------------------------------------------------------
    async def ping(self, peer: PeerId, *, timeout: float | None = None) -> float:
        """Round-trip time to `peer` in seconds, over the authenticated channel."""
        req, t0 = self._new_req(), time.monotonic()
        conn, q = await self._request(peer, m.Ping(req, t0), timeout)
        try:
            answer = await self._answer(conn, q, timeout)
        finally:
            conn.pending.pop(req, None)
        if not isinstance(answer, m.Pong):
            raise TransportError(f"peer answered a ping with {answer.KIND}")
        return time.monotonic() - t0

    async def announce(
        self, peer: PeerId, *, round: int, model_hash: bytes, timeout: float | None = None
    ) -> None:
        """Tell `peer` this site holds model `model_hash` of `round`; raise if it refused."""
        req = self._new_req()
        conn, q = await self._request(peer, m.Announce(req, round, model_hash), timeout)
        try:
            answer = await self._answer(conn, q, timeout)
        finally:
            conn.pending.pop(req, None)
        if not isinstance(answer, m.Reply) or not answer.ok:
            raise PeerRejected(f"announce refused: {getattr(answer, 'reason', answer.KIND)}")

    async def send_update(
        self,
        peer: PeerId,
        *,
        round: int,
        term: int,
        state: Mapping[str, torch.Tensor] | None = None,
        payload: tuple[Manifest, list[memoryview]] | None = None,
        digest: bytes | None = None,
        meta: Mapping[str, m.MetaValue] | None = None,
        timeout: float | None = None,
    ) -> Verdict:
        """Stream an update (a state dict, or an already encoded payload) to `peer`.

        `digest` is the content hash committed on chain; computed from the payload when omitted.
        The receiver checks the bytes against it. `timeout` bounds the wait for a stream slot at the
        receiver and for its verdict (default: limits.request_timeout); a stalled stream fails after
        limits.stall_timeout. Returns the receiver's verdict; raises TransportError/PeerRejected when
        no verdict can be had.
        """
        manifest, frames = payload if payload is not None else codec.encode(state or {})
        if digest is None:
            digest = codec.hash_frames(manifest, frames)
        req = self._new_req()
        offer = m.UpdateOffer(req, round, term, digest, manifest, dict(meta or {}))
        conn, q = await self._request(peer, offer, timeout)
        out: Outbound | None = None
        finished = False
        try:
            answer = await self._answer(conn, q, timeout)
            if isinstance(answer, m.Grant):
                if answer.sid in self._outbound:
                    self._reject("duplicate_stream", peer, "granted a stream id already in use")
                    raise TransportError("peer granted a stream id that is already in use")
                out = Outbound(answer.sid, peer, answer.key)
                self._outbound[out.sid] = out
                out.grant(answer.credits)
                send = self._update_sender(conn, answer)
                pump = asyncio.ensure_future(self._pump(out, frames, send))
                answer = await self._until_reply(conn, q, pump, out, timeout)
            finished = True
            if not isinstance(answer, m.Reply):
                raise TransportError(f"peer answered an update with {answer.KIND}")
            return Verdict(answer.ok, answer.reason, answer.detail)
        finally:
            conn.pending.pop(req, None)
            if out is not None:
                self._outbound.pop(out.sid, None)
                if not finished:  # failed or cancelled mid-stream: let the receiver free its slot now
                    self._spawn(self._send_quietly(conn.control, m.Cancel(out.sid, "sender gave up")))

    def _update_sender(self, conn: _Conn, grant: m.Grant) -> Callable[[list[Any]], Awaitable[None]]:
        if grant.key is None:
            return lambda frames: self._send(conn.control, frames)
        if grant.bulk_port is None:
            raise TransportError("peer sent a session key without a bulk port")
        sock = self._bulk(conn, grant.bulk_port)
        return lambda frames: self._send(sock, frames)

    async def _until_reply(
        self,
        conn: _Conn,
        q: asyncio.Queue[Any],
        pump: asyncio.Future[None],
        out: Outbound,
        timeout: float | None,
    ) -> m.Message:
        """Wait for the receiver's reply while the pump streams; a reply stops the pump early."""
        getter = asyncio.ensure_future(q.get())
        try:
            done, _ = await asyncio.wait({pump, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                msg, _ = getter.result()
                out.fail(getattr(msg, "reason", "") or "closed")
                _raise_if_sentinel(conn, msg)
                return msg
            exc = pump.exception()
            if exc is not None:
                if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                    raise TransportError("peer stopped granting credit: stream stalled") from exc
                if isinstance(exc, m.BadMessage):
                    raise TransportError(f"stream failed: {exc}") from exc
                raise exc
            # every chunk is out: the receiver now hashes, decodes and runs its handler
            msg, _ = await wait_within(getter, timeout or self.limits.request_timeout)
            _raise_if_sentinel(conn, msg)
            return msg
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise TransportError("no verdict from peer after the stream") from exc
        finally:
            for f in (pump, getter):
                f.cancel()
                f.add_done_callback(_retrieve)  # an ended pump's error is already reported above

    async def fetch_model(
        self, peer: PeerId, model_hash: bytes, *, max_bytes: int, timeout: float | None = None
    ) -> dict[str, torch.Tensor]:
        """Download the model with content hash `model_hash` from `peer`, verified against that hash.

        Raises PeerRejected when the peer does not hold it (or refuses), HashMismatch when the bytes
        do not hash to `model_hash`, TransportError on timeouts and stalls.
        """
        key = new_key() if self.bulk_mode == "aead" else None
        req = self._new_req()
        conn, q = await self._request(peer, m.Fetch(req, model_hash, max_bytes, key), timeout)
        try:
            answer = await self._answer(conn, q, timeout)
            if isinstance(answer, m.Reply):
                raise PeerRejected(f"peer did not serve the model: {answer.reason}")
            if not isinstance(answer, m.Serve):
                raise TransportError(f"peer answered a fetch with {answer.KIND}")
            return await self._receive_model(conn, answer, model_hash, max_bytes, key)
        finally:
            conn.pending.pop(req, None)

    async def _receive_model(
        self, conn: _Conn, serve: m.Serve, model_hash: bytes, max_bytes: int, key: bytes | None
    ) -> dict[str, torch.Tensor]:
        if serve.manifest.total_nbytes > max_bytes:
            self._reject("too_large", conn.key, f"model of {serve.manifest.total_nbytes} bytes")
            raise PeerRejected(f"model of {serve.manifest.total_nbytes} bytes exceeds {max_bytes}")
        if key is not None:
            if serve.bulk_port is None:
                raise TransportError("peer serves without a bulk port")
            sock = self._bulk(conn, serve.bulk_port)
        else:
            sock = conn.control
        stream = Inbound(serve.sid, conn.key, serve.manifest, self.limits.chunk_size, key)

        async def grant(n: int, first: bool) -> None:
            await self._send(sock, [m.encode(m.Grant(serve.req, serve.sid, n))])

        failure: str | None = "fetcher gave up"
        try:
            failure = await self._run_inbound(stream, grant)
        finally:
            if failure is not None and failure != "unroutable":
                # without a cancel the server would pump on until its stall timeout
                self._spawn(self._send_quietly(conn.control, m.Cancel(serve.sid, failure)))
        if failure is not None:
            raise TransportError(f"model stream failed: {failure}")
        digest = await stream.digest()
        if digest != model_hash:
            self._reject("hash_mismatch", conn.key, f"served model hashes to {codec.hash_hex(digest)}")
            raise HashMismatch(
                f"model from peer hashes to {codec.hash_hex(digest)}, expected {codec.hash_hex(model_hash)}"
            )
        return codec.decode_flat(serve.manifest, stream.view)
