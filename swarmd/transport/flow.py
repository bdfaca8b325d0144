"""The open streams of a node, in both directions, and their credit flow.

Both sides open streams: the serving side receives updates and serves models, the client side
sends updates and fetches models. Here is what they share: the tables of open streams, which stream
a chunk, grant or cancel belongs to, `receive` (grant credit as chunks land, watch for stalls) and
`pump` (send a payload chunk by chunk, each after one credit). The per-stream objects are stream.py's.

Cut-through: a model this node is fetching with `relay` on is listed in `relays` (by content hash)
while it arrives, and the serving side serves it onward from the same buffer, each chunk once it has
landed (`Inbound.landed`), so a model crosses several hops in about one model time, not one per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

import zmq

from swarmd.aio import wait_within
from swarmd.transport import bulk
from swarmd.transport import messages as m
from swarmd.transport.context import Context, OutFrame
from swarmd.transport.handler import PeerId
from swarmd.transport.messages import Refusal
from swarmd.transport.stream import Inbound, Outbound, iter_chunks

GrantFn = Callable[[int, bool], Awaitable[None]]  # (credits, first grant of the stream)
# One chunk's frames, to wherever they go; returns the zero-copy send's tracker when asked to (True)
SendFn = Callable[[list[OutFrame], bool], Awaitable[zmq.MessageTracker | None]]
# Until the payload's first n bytes are there (a relayed stream still arriving), else raise; (n, timeout)
ReadyFn = Callable[[int, float], Awaitable[None]]


class Flows:
    """The node's open streams, keyed by stream id."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.inbound: dict[bytes, Inbound] = {}
        self.outbound: dict[bytes, Outbound] = {}
        self.relays: dict[bytes, Inbound] = {}  # content hash -> a model we fetch and serve as it arrives
        # Streams that ended early: their chunks still in flight are dropped without a second count.
        self.ended: deque[bytes] = deque(maxlen=256)

    async def receive(self, stream: Inbound, grant: GrantFn) -> Refusal | None:
        """Drive a receive: grant credits as chunks land, watch for stalls. Returns a failure reason."""
        lim, reject = self.ctx.limits, self.ctx.reject
        if stream.sid in self.inbound:  # a sender-chosen sid (fetch) colliding with a live stream
            reject("duplicate_stream", stream.peer, "stream id already in use")
            return Refusal.DUPLICATE_STREAM
        self.inbound[stream.sid] = stream
        first = True
        try:
            while True:
                stream.wake.clear()  # before granting: a chunk landing during the grant re-arms it
                if stream.done.is_set():
                    return m.as_refusal(stream.failed) if stream.failed else None
                n = stream.credits_to_grant(lim.window)
                if n:
                    stream.granted += n
                    await grant(n, first)
                    first = False
                    stream.last_progress = time.monotonic()
                idle = time.monotonic() - stream.last_progress
                if idle >= lim.stall_timeout:
                    reject("stalled", stream.peer, f"no chunk for {lim.stall_timeout:.1f}s")
                    return Refusal.STALLED
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_within(stream.wake.wait(), lim.stall_timeout - idle)
        except zmq.ZMQError as exc:
            reject("unroutable", stream.peer, str(exc))
            return Refusal.UNROUTABLE
        finally:
            self.inbound.pop(stream.sid, None)
            if stream.failed is not None or not stream.done.is_set():
                self.ended.append(stream.sid)

    @contextlib.contextmanager
    def relaying(self, h: bytes, stream: Inbound, started: Callable[[], object] | None) -> Iterator[None]:
        """With `started`, serve `stream` (a download of the model with content hash `h`) onward while
        it arrives, and call `started()`: unless another download of `h` is relayed already. A download
        that ends in an error fails the stream, so whoever it is served to stops at once."""
        if started is None or h in self.relays:
            yield
            return
        self.relays[h] = stream
        try:
            started()
            yield
        except BaseException:
            if stream.failed is None:
                stream.fail(Refusal.UPSTREAM_FAILED)
            raise
        finally:
            del self.relays[h]

    async def pump(
        self, out: Outbound, frames: Sequence[memoryview], send: SendFn, ready: ReadyFn | None = None
    ) -> None:
        """Send every chunk of a payload, each after taking one credit from the receiver (and, with
        `ready`, once its bytes have arrived here: a relayed model)."""
        chunk, pool = self.ctx.limits.chunk_size, self.ctx.seal_buffers
        sent = 0
        for seq, pieces in enumerate(iter_chunks(frames, chunk)):
            await out.take(self.ctx.limits.stall_timeout)
            sent += sum(len(p) for p in pieces)
            if ready is not None:
                await ready(sent, self.ctx.limits.stall_timeout)
            if out.sealed:  # sealed into one of the node's buffers, reused once libzmq has sent it
                msg = out.frames(seq, pieces, pool, chunk)
                pool.give_back(msg[-1], await send(msg, True))
            else:
                await send(out.frames(seq, pieces), False)

    def on_chunk(
        self,
        sid: bytes,
        seq: int,
        data: list[memoryview],
        *,
        via_bulk: bool,
        peer: PeerId | None = None,
        route: bytes | None = None,
    ) -> None:
        """A chunk from the control channel (`peer` known) or the bulk channel (sealed, `route` known).
        An unknown stream id costs one dict lookup; a known one's chunk must pass the stream's seal."""
        stream = self.inbound.get(sid)
        if (stream is not None and stream.failed is not None) or (stream is None and sid in self.ended):
            return  # residue of a stream that already failed (and was counted once)
        if stream is None:
            raise m.BadMessage("unknown_stream", "chunk for no open stream")
        if via_bulk != (stream.key is not None) or (peer is not None and peer != stream.peer):
            raise m.BadMessage("unknown_stream", "chunk on the wrong channel or from the wrong peer")
        try:
            stream.accept(seq, data)
        except m.BadMessage as exc:
            stream.fail(exc.reason)
            raise
        if route is not None:
            stream.route = route

    def on_grant(self, msg: m.Grant, *, peer: PeerId | None = None, route: bytes | None = None) -> bool:
        """Credit for one of our outbound streams; False if it names none (a first grant, by req)."""
        out = self.outbound.get(msg.sid)
        if out is None:
            return False
        if peer is not None and out.peer != peer:
            raise m.BadMessage("unknown_stream", "grant for no open stream")
        if route is not None:
            out.route = route
        out.grant(msg.credits)
        return True

    def on_bulk_grant(
        self, g: bulk.BulkGrant, *, peer: PeerId | None = None, route: bytes | None = None
    ) -> None:
        """A sealed grant from the bulk channel for one of our outbound streams."""
        out = self.outbound.get(g.sid)
        if out is None or (peer is not None and peer != out.peer):
            raise m.BadMessage("unknown_stream", "grant for no open stream")
        out.grant_sealed(g)
        if route is not None:
            out.route = route

    def on_cancel(self, peer: PeerId, msg: m.Cancel) -> None:
        """A sender withdrawing its update, or a fetcher abandoning a model we serve to it."""
        stream: Inbound | Outbound | None = self.inbound.get(msg.sid) or self.outbound.get(msg.sid)
        if stream is None or stream.peer != peer:
            raise m.BadMessage("unknown_stream", "cancel for no open stream")
        self.ctx.reject("cancelled", peer, msg.reason)
        stream.fail("cancelled")

    def end_inbound_outside(self, members: Mapping[PeerId, str]) -> None:
        """End the receives whose sender is not in `members` (it was removed from the member set)."""
        for stream in self.inbound.values():
            if stream.peer not in members and stream.failed is None:
                self.ctx.reject(
                    "not_member", stream.peer, "an open stream's sender was removed from the members"
                )
                stream.fail("not_member")


class Admission:
    """Inbound update streams received at the same time, bounded by count (`max_streams`) and by the
    sum of their manifests' sizes (`max_inflight_bytes`; one larger update is admitted when it would
    be alone). Waiters are admitted in FIFO order, so a large update is not starved by small ones."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.active = 0
        self.inflight = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, nbytes: int) -> bool:
        lim = self.ctx.limits
        if self.active >= lim.max_streams:
            return False
        return self.active == 0 or self.inflight + nbytes <= lim.max_inflight_bytes

    def _enter(self, nbytes: int) -> None:
        self.active += 1
        self.inflight += nbytes

    async def acquire(self, nbytes: int) -> None:
        if not self._waiting and self._fits(nbytes):
            self._enter(nbytes)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, fut)
        self._waiting.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # admitted as it was cancelled: hand the place on
                self.release(nbytes)
            else:
                self._waiting.remove(entry)
                self._admit_next()
            raise

    def release(self, nbytes: int) -> None:
        self.active -= 1
        self.inflight -= nbytes
        self._admit_next()

    def _admit_next(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            nbytes, fut = self._waiting.popleft()
            self._enter(nbytes)
            fut.set_result(None)
