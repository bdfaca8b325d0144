"""The client side of a node: our connections to peers and the requests we make over them.

One control DEALER per peer (CURVE client with the peer's key from the ledger), made on first use,
with a monitor that turns a dropped connection or a refused handshake into an error for every
request waiting on it; one bulk DEALER per peer, made on the first sealed stream. Requests: ping,
announce, send_update (offer, then stream the chunks as the receiver grants credit) and fetch_model
(ask, then receive the served stream and check it against the hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
import zmq
import zmq.asyncio

from swarmd import codec
from swarmd.aio import wait_within
from swarmd.codec import Manifest
from swarmd.errors import HashMismatch, PeerRejected, RelayFailed, StreamFailed, TransportError
from swarmd.transport import messages as m
from swarmd.transport.bulk import BulkChunk, BulkGrant
from swarmd.transport.context import Context
from swarmd.transport.flow import Flows, SendFn
from swarmd.transport.handler import PeerId, Verdict
from swarmd.transport.loop import Received, monitor_loop, receive_loop
from swarmd.transport.messages import Refusal
from swarmd.transport.stream import Inbound, Outbound, new_key

T = TypeVar("T")
Request = m.Ping | m.Announce | m.UpdateOffer | m.Fetch | m.SecAgg
Answers = asyncio.Queue[m.Message]  # a request's answers, and the local events that end its wait

LATE_WINDOW = 256  # ended requests per peer whose late answers are recognised as ours
REFUSAL_KEPT = 1.0  # seconds a refused handshake answers requests before a fresh socket tries again
_HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
}


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
        self.bulk_token: bytes | None = None
        self.pending: dict[int, Answers] = {}
        self.finished: OrderedDict[int, None] = OrderedDict()  # the last LATE_WINDOW requests we ended
        self.tasks: list[asyncio.Task[None]] = []
        self.refused: str | None = None  # set by the monitor when the peer refuses our handshake
        self.refused_at = 0.0  # when (monotonic): a refusal is retried on a fresh socket after REFUSAL_KEPT

    def finish(self, req: int) -> None:
        """Stop waiting for answers to `req`. One that still comes (we timed out, or cancelled a question
        the answer crossed) is late, not hostile: it is dropped without counting as a rejection."""
        if self.pending.pop(req, None) is not None:
            self.finished[req] = None
            if len(self.finished) > LATE_WINDOW:
                self.finished.popitem(last=False)

    def post(self, reason: Refusal) -> None:
        """End every waiting request with a local event (a req-0 reply, see `_raise_if_sentinel`)."""
        for q in self.pending.values():
            q.put_nowait(m.Reply(0, False, reason))

    def on_event(self, kind: int) -> None:
        if kind == zmq.EVENT_DISCONNECTED:  # the peer died or restarted: what we wait for will not come
            self.post(Refusal.DISCONNECTED)
        elif kind in _HANDSHAKE_FAILED:
            self.refused = "handshake refused by the peer (not a member there, or a key mismatch)"
            self.refused_at = time.monotonic()
            self.post(Refusal.REFUSED)
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.refused = None

    def close_sockets(self) -> None:
        self.control.close(linger=0)
        self.mon.close(linger=0)
        if self.bulk is not None:
            self.bulk.close(linger=0)


def _host(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def _retrieve(fut: asyncio.Future[T]) -> None:
    if not fut.cancelled():
        fut.exception()


def _keep(q: Answers, getter: asyncio.Future[m.Message]) -> m.Message | None:
    """End `getter`, a `q.get()`: what it took goes back into `q` (for `Client._end` to see, should the
    caller not read it) and is returned; None if it took nothing."""
    if not getter.done():
        getter.cancel()  # Queue.get leaves an item it was woken for in the queue when cancelled
        return None
    if getter.cancelled():
        return None
    msg = getter.result()
    q.put_nowait(msg)
    return msg


def _raise_if_sentinel(conn: _Conn, msg: m.Message) -> None:
    """Local events posted to pending requests as req-0 replies become errors for the caller."""
    if not isinstance(msg, m.Reply) or msg.req != 0:
        return
    if msg.reason == Refusal.REFUSED:
        raise PeerRejected(conn.refused or "handshake refused by the peer")
    if msg.reason == Refusal.PEER_REMOVED:
        raise PeerRejected("peer was removed from the member set")
    raise TransportError(f"connection to peer lost ({msg.reason})", hint="it may have crashed or restarted")


class Client:
    """Our requests to peers; the node's public request API delegates here (see node.py)."""

    def __init__(self, ctx: Context, flows: Flows) -> None:
        self.ctx = ctx
        self.flows = flows
        self.conns: dict[PeerId, _Conn] = {}
        self._req = itertools.count(1)

    # --- connections ------------------------------------------------------------------------------
    def _conn(self, peer: PeerId) -> _Conn:
        conn = self.conns.get(peer)
        if conn is not None:
            return conn
        endpoint = self.ctx.members.get(peer)
        if endpoint is None:
            raise PeerRejected("not a member: no endpoint known for this peer")
        if not endpoint.startswith(("tcp://", "ipc://")):  # a private site: libp2p only (issue 18)
            raise TransportError(
                "this peer accepts no ZeroMQ connection (a private site behind a relay)",
                hint="install swarmd[p2p] to reach it over libp2p",
            )
        sock = self.ctx.socket(zmq.DEALER)
        sock.curve_serverkey = peer
        sock.curve_publickey = self.ctx.public
        sock.curve_secretkey = self.ctx.secret
        mon = sock.get_monitor_socket()
        sock.connect(endpoint)
        conn = _Conn(peer, endpoint, sock, mon)
        self._listen(conn, sock, via_bulk=False)
        conn.tasks.append(asyncio.ensure_future(monitor_loop(mon, self.ctx.stats, conn.on_event)))
        self.conns[peer] = conn
        return conn

    def _bulk(self, conn: _Conn, port: int | None, token: bytes | None) -> zmq.asyncio.Socket:
        """Our bulk DEALER to the peer's bulk port, logged in with the token it handed us over CURVE."""
        if port is None or token is None:
            raise TransportError("peer sent a session key without a bulk port and token")
        if conn.bulk is not None and (conn.bulk_port, conn.bulk_token) == (port, token):
            return conn.bulk
        if conn.bulk is not None:
            conn.bulk.close(linger=0)
        sock = self.ctx.socket(zmq.DEALER, bulk=True)
        sock.plain_username = self.ctx.public_id.hex().encode()
        sock.plain_password = token.hex().encode()
        sock.connect(f"{_host(conn.endpoint)}:{port}")
        conn.bulk, conn.bulk_port, conn.bulk_token = sock, port, token
        self._listen(conn, sock, via_bulk=True)
        return sock

    def _listen(self, conn: _Conn, sock: zmq.asyncio.Socket, *, via_bulk: bool) -> None:
        async def dispatch(r: Received) -> None:
            self._on_answer(conn, r, via_bulk=via_bulk)

        loop = receive_loop(
            self.ctx,
            sock,
            dispatch,
            where="peer connection",
            peer_of=lambda _: conn.key,
            routed=False,
            bulk_channel=via_bulk,
        )
        conn.tasks.append(asyncio.ensure_future(loop))

    def keep_only(self, members: Mapping[PeerId, str]) -> None:
        """Drop our connections to peers that left `members` or moved to another endpoint."""
        for key in [k for k, c in self.conns.items() if members.get(k) != c.endpoint]:
            self._drop(key, Refusal.PEER_REMOVED)

    def _drop(self, key: PeerId, reason: Refusal) -> None:
        conn = self.conns.pop(key)
        with contextlib.suppress(zmq.ZMQError):
            conn.control.disable_monitor()  # before its reader closes (see close())
        for task in conn.tasks:
            task.cancel()
        conn.post(reason)
        conn.close_sockets()

    def _live_conn(self, peer: PeerId) -> _Conn:
        """The peer's connection; one whose handshake the peer refused over REFUSAL_KEPT ago is rebuilt.

        libzmq never retries a handshake the peer refused, and a refusal is often brief: a restarted
        peer refuses everyone until it has read the member list, a peer that has not yet seen our
        admission refuses us until its next poll. Kept for REFUSAL_KEPT, the refusal answers our
        requests at once (no handshake per request to a peer that does not list us)."""
        conn = self._conn(peer)
        if conn.refused and time.monotonic() - conn.refused_at >= REFUSAL_KEPT:
            self._drop(peer, Refusal.REFUSED)
            conn = self._conn(peer)
        return conn

    def disable_monitors(self) -> None:
        """First step of closing: libzmq blocks sending the final event to a monitor nobody reads."""
        for conn in self.conns.values():
            with contextlib.suppress(zmq.ZMQError):
                conn.control.disable_monitor()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for c in self.conns.values() for t in c.tasks]

    def close_sockets(self) -> None:
        for conn in self.conns.values():
            conn.close_sockets()
        self.conns.clear()

    # --- answers ----------------------------------------------------------------------------------
    def _on_answer(self, conn: _Conn, r: Received, *, via_bulk: bool) -> None:
        """Answers from one peer: chunks and grants of open streams, else by request id."""
        msg = r.msg
        if isinstance(msg, BulkChunk):
            self.flows.on_chunk(msg.sid, msg.seq, [msg.sealed], via_bulk=True, peer=conn.key)
        elif isinstance(msg, BulkGrant):
            self.flows.on_bulk_grant(msg, peer=conn.key)
        elif isinstance(msg, m.Chunk):
            self.flows.on_chunk(msg.sid, msg.seq, r.data, via_bulk=False, peer=conn.key)
        elif isinstance(msg, m.Grant) and self.flows.on_grant(msg, peer=conn.key):
            pass
        elif isinstance(msg, m.Pong | m.Reply | m.Grant | m.Serve | m.SecAggReply) and not via_bulk:
            q = conn.pending.get(msg.req)
            if q is not None:
                q.put_nowait(msg)
                return
            self._withdraw(conn, msg)  # we gave up on this offer or fetch (it waited too long for a slot)
            if msg.req not in conn.finished:
                raise m.BadMessage("unknown_request", f"{msg.KIND} for no request of ours")
            self.ctx.stats.late_answers += 1
        else:
            raise m.BadMessage("unexpected_kind", f"{msg.KIND} is not an answer")

    def _withdraw(self, conn: _Conn, msg: m.Message) -> None:
        """Cancel the stream a grant or serve opens, for an offer or fetch we no longer wait on: without a
        cancel the peer would hold its slot until its stall timeout, and a fetcher that keeps asking
        again would keep every slot of the peer's taken by serves nobody reads."""
        if isinstance(msg, m.Grant | m.Serve):
            why = "offer withdrawn" if isinstance(msg, m.Grant) else "fetch abandoned"
            self.ctx.spawn(self.ctx.send_quietly(conn.control, m.Cancel(msg.sid, why)))

    def _end(self, conn: _Conn, req: int) -> None:
        """Stop waiting for answers to `req`. A grant or serve that reached its queue unread (the caller
        was cancelled or timed out as it came) is withdrawn too: answers after this are late ones."""
        q = conn.pending.get(req)
        conn.finish(req)
        while q is not None and not q.empty():
            self._withdraw(conn, q.get_nowait())

    async def _request(self, peer: PeerId, msg: Request, timeout: float | None) -> tuple[_Conn, Answers]:
        """Queue `msg` on the peer's control DEALER; return where its answers will arrive.

        A DEALER without a live connection blocks the send: the peer is down, or it refused our
        handshake and libzmq dropped the pipe. The monitor posts such events to the pending
        queue, so the send is raced against it and bounded by the request timeout."""
        conn = self._live_conn(peer)
        if conn.refused:
            raise PeerRejected(conn.refused)
        q: Answers = asyncio.Queue()
        conn.pending[msg.req] = q
        send = asyncio.ensure_future(self.ctx.send(conn.control, [m.encode(msg)]))
        event = asyncio.ensure_future(q.get())
        try:
            try:
                await asyncio.wait(
                    {send, event},
                    timeout=timeout or self.ctx.limits.request_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                early = _keep(q, event)  # the answer stays queued: the caller's, or `_end`'s to withdraw
            if early is not None:
                _raise_if_sentinel(conn, early)
            if not send.done():
                if conn.refused:
                    raise PeerRejected(conn.refused)
                raise TransportError(
                    "cannot reach peer", hint="is it up, reachable, and does it list this site as a member?"
                )
            send.result()
        except BaseException:
            self._end(conn, msg.req)
            raise
        finally:
            for fut in (send, event):
                if not fut.done():
                    fut.cancel()
        return conn, q

    async def _answer(self, conn: _Conn, q: Answers, timeout: float | None) -> m.Message:
        if conn.refused:
            raise PeerRejected(conn.refused)
        getter = asyncio.ensure_future(q.get())
        try:
            done, _ = await asyncio.wait({getter}, timeout=timeout or self.ctx.limits.request_timeout)
        except BaseException:
            _keep(q, getter)  # cancelled: an answer that came as we stopped stays queued for `_end`
            raise
        if not done:
            _keep(q, getter)
            raise TransportError(
                "no answer from peer", hint="is it up, reachable, and does it list this site as a member?"
            )
        msg = getter.result()
        _raise_if_sentinel(conn, msg)
        return msg

    async def _ask(self, peer: PeerId, msg: Request, timeout: float | None) -> m.Message:
        """One request, one answer."""
        conn, q = await self._request(peer, msg, timeout)
        try:
            return await self._answer(conn, q, timeout)
        finally:
            self._end(conn, msg.req)

    # --- requests ---------------------------------------------------------------------------------
    async def ping(self, peer: PeerId, timeout: float | None) -> float:
        t0 = time.monotonic()
        answer = await self._ask(peer, m.Ping(next(self._req), t0), timeout)
        if not isinstance(answer, m.Pong):
            raise TransportError(f"peer answered a ping with {answer.KIND}")
        return time.monotonic() - t0

    async def announce(self, peer: PeerId, round: int, model_hash: bytes, timeout: float | None) -> None:
        m.check_announce(await self._ask(peer, m.Announce(next(self._req), round, model_hash), timeout))

    async def secagg(
        self, peer: PeerId, round: int, topic: m.SecAggTopic, body: bytes, timeout: float | None
    ) -> bytes:
        return m.secagg_body(
            await self._ask(peer, m.SecAgg(next(self._req), round, topic, body), timeout), topic
        )

    async def send_update(
        self, peer: PeerId, offer: m.UpdateOffer, frames: list[memoryview], timeout: float | None
    ) -> Verdict:
        """Offer an update, stream it once granted, return the receiver's verdict (see Node.send_update)."""
        conn, q = await self._request(peer, offer, timeout)
        out: Outbound | None = None
        finished = False
        try:
            answer = await self._answer(conn, q, timeout)
            if isinstance(answer, m.Grant):
                if answer.sid in self.flows.outbound:
                    self.ctx.reject("duplicate_stream", peer, "granted a stream id already in use")
                    raise TransportError("peer granted a stream id that is already in use")
                out = Outbound(answer.sid, peer, answer.key)
                self.flows.outbound[out.sid] = out
                out.grant(answer.credits)
                pump = asyncio.ensure_future(self.flows.pump(out, frames, self._update_sender(conn, answer)))
                answer = await self._until_reply(conn, q, pump, out, timeout)
            finished = True
            if not isinstance(answer, m.Reply):
                raise TransportError(f"peer answered an update with {answer.KIND}")
            return Verdict(answer.ok, answer.reason, answer.detail, answer.receipt)
        finally:
            self._end(conn, offer.req)
            if out is not None:
                self.flows.outbound.pop(out.sid, None)
                if not finished:  # failed or cancelled mid-stream: let the receiver free its slot now
                    self.ctx.spawn(self.ctx.send_quietly(conn.control, m.Cancel(out.sid, "sender gave up")))

    def new_offer(
        self, round: int, term: int, digest: bytes, manifest: Manifest, meta: Mapping[str, m.MetaValue]
    ) -> m.UpdateOffer:
        return m.UpdateOffer(next(self._req), round, term, digest, manifest, dict(meta))

    def _update_sender(self, conn: _Conn, grant: m.Grant) -> SendFn:
        sock = conn.control
        if grant.key is not None:
            sock = self._bulk(conn, grant.bulk_port, grant.token)
        return lambda frames, track: self.ctx.send(sock, frames, track=track)

    async def _until_reply(
        self, conn: _Conn, q: Answers, pump: asyncio.Future[None], out: Outbound, timeout: float | None
    ) -> m.Message:
        """Wait for the receiver's reply while the pump streams; a reply stops the pump early."""
        getter = asyncio.ensure_future(q.get())
        try:
            both: set[asyncio.Future[None] | asyncio.Future[m.Message]] = {pump, getter}
            done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                msg = getter.result()
                out.fail(getattr(msg, "reason", "") or "closed")
                _raise_if_sentinel(conn, msg)
                return msg
            exc = pump.exception()
            if exc is not None:
                if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                    raise StreamFailed("peer stopped granting credit: stream stalled") from exc
                if isinstance(exc, m.BadMessage):
                    raise TransportError(f"stream failed: {exc}") from exc
                raise exc
            # every chunk is out: the receiver now hashes, decodes and runs its handler
            msg = await wait_within(getter, timeout or self.ctx.limits.request_timeout)
            _raise_if_sentinel(conn, msg)
            return msg
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise TransportError("no verdict from peer after the stream") from exc
        finally:
            for f in (pump, getter):
                f.cancel()
                f.add_done_callback(_retrieve)  # an ended pump's error is already reported above

    async def fetch_model(
        self,
        peer: PeerId,
        model_hash: bytes,
        max_bytes: int,
        timeout: float | None,
        relay: Callable[[], object] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Ask for a model, receive and verify it (see Node.fetch_model)."""
        key = new_key() if self.ctx.bulk_mode == "aead" else None
        req = next(self._req)
        conn, q = await self._request(peer, m.Fetch(req, model_hash, max_bytes, key), timeout)
        try:
            answer = await self._answer(conn, q, timeout)
            if isinstance(answer, m.Reply):
                raise PeerRejected(f"peer did not serve the model: {answer.reason}")
            if not isinstance(answer, m.Serve):
                raise TransportError(f"peer answered a fetch with {answer.KIND}")
            return await self._receive_model(conn, q, answer, model_hash, max_bytes, key, relay)
        finally:
            self._end(conn, req)

    async def _receive_model(
        self, conn: _Conn, q: Answers, serve: m.Serve, model_hash: bytes, max_bytes: int, key: bytes | None,
        relay: Callable[[], object] | None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        ctx = self.ctx
        try:
            if serve.manifest.total_nbytes > max_bytes:
                ctx.reject("too_large", conn.key, f"model of {serve.manifest.total_nbytes} bytes")
                raise PeerRejected(f"model of {serve.manifest.total_nbytes} bytes exceeds {max_bytes}")
            sock = conn.control
            if key is not None:
                sock = self._bulk(conn, serve.bulk_port, serve.token)
            stream = Inbound(serve.sid, conn.key, serve.manifest, ctx.limits.chunk_size, key)
        except BaseException:
            self._withdraw(conn, serve)  # the server opened the stream for us: it frees the slot now
            raise

        async def grant(n: int, first: bool) -> None:
            frame = stream.sealed_grant() if key is not None else m.encode(m.Grant(serve.req, serve.sid, n))
            await ctx.send(sock, [frame])

        # A reply during the stream means the server stopped (a relay whose own download failed), as does
        # a dropped connection: either ends the stream at once, not after the stall timeout.
        ended = asyncio.ensure_future(q.get())
        ended.add_done_callback(lambda f: None if f.cancelled() else stream.fail("peer_ended"))
        failure: str | None = "fetcher gave up"
        with self.flows.relaying(model_hash, stream, relay):
            try:
                failure = await self.flows.receive(stream, grant)
            finally:
                stopped = ended.done() and not ended.cancelled()
                ended.cancel()
                if failure is not None and failure != "unroutable" and not stopped:
                    # without a cancel the server would pump on until its stall timeout
                    ctx.spawn(ctx.send_quietly(conn.control, m.Cancel(serve.sid, failure)))
            if stopped:
                _raise_stopped(conn, ended.result())
            if failure is not None:
                raise StreamFailed(f"model stream failed: {failure}")
            digest = await stream.digest_against(model_hash)
            if digest != model_hash:
                got, want = codec.hash_hex(digest), codec.hash_hex(model_hash)
                ctx.reject("hash_mismatch", conn.key, f"served model hashes to {got}")
                raise HashMismatch(f"model from peer hashes to {got}, expected {want}")
        return codec.decode_flat(serve.manifest, stream.view)


def _raise_stopped(conn: _Conn, msg: m.Message) -> None:
    """The server ended a model stream it was serving us: say why."""
    _raise_if_sentinel(conn, msg)
    reason = msg.reason if isinstance(msg, m.Reply) else msg.KIND
    if reason == Refusal.UPSTREAM_FAILED:
        raise RelayFailed("the peer's own download of the model failed while it served it on")
    raise StreamFailed(f"peer stopped serving the model: {reason}")
