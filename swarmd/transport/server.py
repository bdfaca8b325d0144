"""The serving side of a node: what arrives on our two ROUTERs (the zguide's ROUTER with explicit
identities), and our answers to it.

- control ROUTER: answers pings and announces; admits update offers (FIFO, several streams at once,
  bounded by `max_streams` and `max_inflight_bytes`, so a silent stream cannot shut others out and
  memory stays bounded), receives them and hands each to the handler once its hash is checked, while
  the others go on (the handler may hold several at once, within the same bounds); serves fetched
  models (`max_serves` at a time), also a model this node is still downloading (cut-through, flow.py);
  takes chunks, grants and cancels of streams over CURVE.
- bulk ROUTER: sealed chunks and sealed credit grants only, in bulk.py's fixed layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio
from zmq.utils import z85

from swarmd import codec
from swarmd.errors import TransportError
from swarmd.transport import messages as m
from swarmd.transport.bulk import BulkChunk, BulkGrant
from swarmd.transport.context import Context, OutFrame
from swarmd.transport.flow import Admission, Flows
from swarmd.transport.handler import AnnounceHeader, PeerId, SecAggHeader, UpdateHeader, Verdict
from swarmd.transport.loop import Received, receive_loop
from swarmd.transport.messages import Refusal
from swarmd.transport.stream import Inbound, Outbound, new_key, new_sid

log = logging.getLogger("swarmd.transport")


def _bulk_user(frames: list[zmq.Frame]) -> PeerId | None:
    """The member id ZAP admitted on the bulk port (the PLAIN user name, hex)."""
    try:
        return bytes.fromhex(str(frames[1].get("User-Id")))
    except (ValueError, IndexError, zmq.ZMQError):
        return None


def _user(frames: list[zmq.Frame]) -> PeerId | None:
    """The CURVE key ZAP authenticated for this message (its `User-Id`), if any."""
    try:
        return z85.decode(str(frames[1].get("User-Id")))
    except (ValueError, IndexError, zmq.ZMQError):
        return None


def _update_reply(req: int, verdict: Verdict) -> m.Reply:
    """The reply to an update: the handler's receipt rides along only on an acceptance, and only when it
    has the wire's shape (else the sender would refuse the whole reply, and with it the acceptance)."""
    receipt = verdict.receipt if verdict.ok else None
    if receipt is not None and (not isinstance(receipt, bytes) or len(receipt) != m.RECEIPT_BYTES):
        size = len(receipt) if isinstance(receipt, bytes) else type(receipt).__name__
        log.error("update handler gave a receipt of %s, not %d bytes: sent without it", size, m.RECEIPT_BYTES)
        receipt = None
    return m.Reply(req, verdict.ok, verdict.reason, verdict.detail, receipt)


class PeerSlots:
    """At most `per_peer` of something at a time for each peer; a peer's entry lives only while one of
    its requests holds or waits for a slot (the table cannot grow with peers that came and went)."""

    def __init__(self, per_peer: int) -> None:
        self.per_peer = per_peer
        self._of: dict[PeerId, tuple[asyncio.Semaphore, list[int]]] = {}

    def users(self, peer: PeerId) -> int:
        entry = self._of.get(peer)
        return entry[1][0] if entry is not None else 0

    @contextlib.asynccontextmanager
    async def slot(self, peer: PeerId) -> AsyncIterator[None]:
        entry = self._of.get(peer)
        if entry is None:
            entry = self._of[peer] = (asyncio.Semaphore(self.per_peer), [0])
        turn, users = entry
        users[0] += 1
        try:
            async with turn:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._of[peer]


class Server:
    """Serves on a bound control ROUTER and, with bulk mode `aead`, a bound bulk ROUTER."""

    def __init__(
        self, ctx: Context, flows: Flows, router: zmq.asyncio.Socket, bulk: zmq.asyncio.Socket | None
    ) -> None:
        self.ctx = ctx
        self.flows = flows
        self.router = router
        self.bulk = bulk
        self._streams_of: Counter[PeerId] = Counter()  # update offers each peer holds
        self._queued = 0
        self._admission = Admission(ctx)
        self._serves = asyncio.Semaphore(ctx.limits.max_serves)
        self._peer_serves = PeerSlots(ctx.limits.serves_per_peer)

    def start(self) -> None:
        """Start the receive loops (as node tasks)."""
        ctx = self.ctx
        ctx.spawn(
            receive_loop(
                ctx,
                self.router,
                self._dispatch,
                where="control socket",
                peer_of=_user,
                routed=True,
                members_only=True,
            )
        )
        if self.bulk is not None:
            ctx.spawn(
                receive_loop(
                    ctx,
                    self.bulk,
                    self._dispatch_bulk,
                    where="bulk socket",
                    peer_of=_bulk_user,
                    routed=True,
                    bulk_channel=True,
                )
            )

    async def _reply(self, rid: bytes, msg: m.Message) -> None:
        await self.ctx.send(self.router, [m.encode(msg)], rid)

    async def _reply_quietly(self, rid: bytes, msg: m.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            await self._reply(rid, msg)

    # --- control ROUTER -----------------------------------------------------------------------------
    async def _dispatch(self, r: Received) -> None:
        rid, peer, msg = r.route, r.peer, r.msg
        if rid is None or peer is None or not isinstance(msg, m.Message):  # narrows the types only
            raise m.BadMessage("not_member", "message without a sender")
        if r.data and not isinstance(msg, m.Chunk):
            raise m.BadMessage("bad_header", f"{msg.KIND} carries unexpected data frames")
        if isinstance(msg, m.Ping):
            await self._reply(rid, m.Pong(msg.req, msg.sent))
        elif isinstance(msg, m.Announce):
            self.ctx.spawn(self._on_announce(rid, peer, msg))
        elif isinstance(msg, m.SecAgg):
            self.ctx.spawn(self._on_secagg(rid, peer, msg))
        elif isinstance(msg, m.UpdateOffer):
            self._admit_update(rid, peer, msg)
        elif isinstance(msg, m.Fetch):
            self.ctx.spawn(self._serve_fetch(rid, peer, msg))
        elif isinstance(msg, m.Chunk):
            self.flows.on_chunk(msg.sid, msg.seq, r.data, via_bulk=False, peer=peer)
        elif isinstance(msg, m.Grant):
            if not self.flows.on_grant(msg, peer=peer):
                raise m.BadMessage("unknown_stream", "grant for no open stream")
        elif isinstance(msg, m.Cancel):
            self.flows.on_cancel(peer, msg)
        else:
            raise m.BadMessage("unexpected_kind", f"{msg.KIND} is not a request")

    async def _on_announce(self, rid: bytes, peer: PeerId, msg: m.Announce) -> None:
        try:
            await self.ctx.handler.on_announce(peer, AnnounceHeader(msg.round, msg.model_hash))
            await self._reply(rid, m.Reply(msg.req, True))
        except zmq.ZMQError as exc:
            self.ctx.reject("unroutable", peer, str(exc))
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("announce handler failed")
            self.ctx.reject("handler_error", peer, repr(exc))
            with contextlib.suppress(zmq.ZMQError):
                await self._reply(rid, m.Reply(msg.req, False, Refusal.HANDLER_ERROR))

    async def _on_secagg(self, rid: bytes, peer: PeerId, msg: m.SecAgg) -> None:
        answer: m.Message
        try:
            out = await self.ctx.handler.on_secagg(peer, SecAggHeader(msg.round, msg.topic), msg.body)
            if isinstance(out, Verdict):
                answer = m.Reply(
                    msg.req, False, out.reason or Refusal.PRIVACY_REFUSED, out.detail[: m.MAX_TEXT]
                )
            else:
                answer = m.SecAggReply(msg.req, out)
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("secagg handler failed")
            self.ctx.reject("handler_error", peer, repr(exc))
            answer = m.Reply(msg.req, False, Refusal.HANDLER_ERROR)
        try:
            await self._reply(rid, answer)
        except zmq.ZMQError as exc:
            self.ctx.reject("unroutable", peer, str(exc))

    # --- bulk ROUTER (sealed chunks and their grants only) ---------------------------------------------
    async def _dispatch_bulk(self, r: Received) -> None:
        if isinstance(r.msg, BulkChunk):
            self.flows.on_chunk(
                r.msg.sid, r.msg.seq, [r.msg.sealed], via_bulk=True, peer=r.peer, route=r.route
            )
        elif isinstance(r.msg, BulkGrant):
            self.flows.on_bulk_grant(r.msg, peer=r.peer, route=r.route)
        else:  # receive_loop parses bulk frames into these two only
            raise m.BadMessage("unexpected_kind", "not a bulk message")

    # --- inbound updates ------------------------------------------------------------------------------
    def _admit_update(self, rid: bytes, peer: PeerId, msg: m.UpdateOffer) -> None:
        lim, total = self.ctx.limits, msg.manifest.total_nbytes
        early = self._check_offer(peer, msg)
        reason: Refusal | None
        if total > self.ctx.max_bytes:
            reason, detail = Refusal.TOO_LARGE, f"update of {total} bytes, limit {self.ctx.max_bytes}"
        elif not early.ok:
            reason, detail = early.reason or Refusal.HANDLER_ERROR, early.detail
        elif self._streams_of[peer] >= lim.streams_per_peer:
            reason, detail = Refusal.STREAM_CAP, f"peer already holds {self._streams_of[peer]} update streams"
        elif self._queued >= lim.max_queued:
            reason, detail = Refusal.BUSY, "too many updates waiting"
        else:
            self._streams_of[peer] += 1
            self._queued += 1
            self.ctx.spawn(self._receive_update(rid, peer, msg))
            return
        self.ctx.reject(reason, peer, detail)
        self.ctx.spawn(self._reply_quietly(rid, m.Reply(msg.req, False, reason, detail)))

    def _check_offer(self, peer: PeerId, msg: m.UpdateOffer) -> Verdict:
        """The handler's early look at an offer (`check_offer`), before any byte moves."""
        try:
            verdict = self.ctx.handler.check_offer(
                peer, UpdateHeader(msg.round, msg.term, msg.digest, msg.manifest, msg.meta)
            )
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("check_offer failed")
            return Verdict(False, Refusal.HANDLER_ERROR, repr(exc)[:200])
        if not isinstance(verdict, Verdict):
            return Verdict(False, Refusal.HANDLER_ERROR, f"check_offer returned {type(verdict).__name__}")
        return verdict

    async def _receive_update(self, rid: bytes, peer: PeerId, msg: m.UpdateOffer) -> None:
        nbytes = msg.manifest.total_nbytes
        try:
            try:
                await self._admission.acquire(nbytes)
            finally:
                self._queued -= 1
            try:
                verdict = await self._stream_update(rid, peer, msg)
            except Exception as exc:  # e.g. no memory for the buffer: refuse this one, keep serving
                log.exception("receiving an update failed")
                self.ctx.reject("internal_error", peer, repr(exc))
                verdict = Verdict(False, Refusal.INTERNAL_ERROR)
            finally:
                self._admission.release(nbytes)
            await self._reply_quietly(rid, _update_reply(msg.req, verdict))
        finally:
            self._streams_of[peer] -= 1
            if self._streams_of[peer] <= 0:
                del self._streams_of[peer]

    async def _stream_update(self, rid: bytes, peer: PeerId, msg: m.UpdateOffer) -> Verdict:
        ctx = self.ctx
        key = new_key() if ctx.bulk_mode == "aead" else None
        stream = Inbound(new_sid(), peer, msg.manifest, ctx.limits.chunk_size, key)

        async def grant(n: int, first: bool) -> None:
            g = m.Grant(msg.req, stream.sid, n)
            if first and key is not None:
                g = m.Grant(msg.req, stream.sid, n, key, ctx.bulk_port, ctx.bulk_token(peer))
            if first or key is None:
                await self._reply(rid, g)
            else:
                await ctx.send(self._bulk_socket(), [stream.sealed_grant()], stream.route)

        failure = await self.flows.receive(stream, grant)
        if failure is not None:
            return Verdict(False, failure, stream.failed or "")  # the detail names the violation
        digest = await stream.digest()
        if digest != msg.digest:
            ctx.reject(
                "hash_mismatch", peer, f"got {codec.hash_hex(digest)}, claimed {codec.hash_hex(msg.digest)}"
            )
            return Verdict(False, Refusal.HASH_MISMATCH, codec.hash_hex(digest))
        state = codec.decode_flat(msg.manifest, stream.view)
        ctx.stats.updates_received += 1
        header = UpdateHeader(msg.round, msg.term, msg.digest, msg.manifest, msg.meta)
        try:
            verdict = await ctx.handler.on_update(peer, header, state, digest)
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("update handler failed")
            ctx.reject("handler_error", peer, repr(exc))
            return Verdict(False, Refusal.HANDLER_ERROR)
        if not isinstance(verdict, Verdict):
            ctx.reject("handler_error", peer, f"on_update returned {type(verdict).__name__}, not a Verdict")
            return Verdict(False, Refusal.HANDLER_ERROR)
        return verdict

    def _bulk_socket(self) -> zmq.asyncio.Socket:
        if self.bulk is None:  # a session key is only handed out with a bulk ROUTER
            raise TransportError("no bulk socket for a sealed stream")
        return self.bulk

    # --- serving models -------------------------------------------------------------------------------
    async def _serve_fetch(self, rid: bytes, peer: PeerId, msg: m.Fetch) -> None:
        try:
            # The peer's own slot first: its requests beyond it wait there, not in the node-wide queue.
            async with self._peer_serves.slot(peer), self._serves:
                reason = await self._serve_model(rid, peer, msg)
        except zmq.ZMQError as exc:
            reason = Refusal.UNROUTABLE
            self.ctx.reject(reason, peer, str(exc))
        # A fetcher that cancelled no longer waits for a reply.
        if reason is not None and reason != Refusal.CANCELLED:
            await self._reply_quietly(rid, m.Reply(msg.req, False, reason))

    async def _serve_model(self, rid: bytes, peer: PeerId, msg: m.Fetch) -> Refusal | None:
        """Stream a held model to a fetching peer; return why it failed, or None when all was sent."""
        ctx = self.ctx
        try:
            payload = ctx.handler.serve_model(msg.model_hash)
        except Exception as exc:  # a handler bug must not end the node (logged with its traceback)
            log.exception("serve_model failed")
            ctx.reject("handler_error", peer, repr(exc))
            return Refusal.HANDLER_ERROR
        ready = None
        relayed = self.flows.relays.get(msg.model_hash) if payload is None else None
        if relayed is not None:  # still arriving here: serve each chunk once it has landed
            payload, ready = (relayed.manifest, [relayed.view]), relayed.landed
        if payload is None:
            return Refusal.NOT_FOUND
        manifest, frames = payload
        if manifest.total_nbytes > msg.max_bytes:
            return Refusal.TOO_LARGE
        if msg.key is not None and self.bulk is None:
            return Refusal.NO_BULK_CHANNEL
        out = Outbound(new_sid(), peer, msg.key)
        self.flows.outbound[out.sid] = out
        try:
            bulk = (ctx.bulk_port, ctx.bulk_token(peer)) if msg.key else (None, None)
            await self._reply(rid, m.Serve(msg.req, out.sid, manifest, *bulk))

            async def send(frames_: list[OutFrame], track: bool) -> zmq.MessageTracker | None:
                if msg.key is None:
                    return await ctx.send(self.router, frames_, rid, track=track)
                return await ctx.send(self._bulk_socket(), frames_, out.route, track=track)

            await self.flows.pump(out, frames, send, ready)
            ctx.stats.models_served += 1
            return None
        except (TimeoutError, asyncio.TimeoutError):
            ctx.reject("stalled", peer, "fetching peer stopped granting credit")
            return Refusal.STALLED
        except m.BadMessage as exc:
            return m.as_refusal(exc.reason)
        finally:
            self.flows.outbound.pop(out.sid, None)
