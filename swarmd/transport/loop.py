"""The node's socket loops, one skeleton each.

`receive_loop` is what every receiving socket (control ROUTER, bulk ROUTER, each DEALER) runs:
receive a message, count it, check its envelope, then
- bulk sockets: parse the fixed-layout bulk header (bulk.py; no msgpack);
- control sockets: check the sender is a member and within its budget (budget.py; else `rate`), then
  decode the header: inline when small, on a worker thread when larger than 8 KiB (a manifest), so
  pings stay answered while it decodes; the decode time is charged to the sender's CPU budget;
hand it to the side's dispatch, and count and drop whatever is bad, so a bad frame or a bug never
ends the loop (a dead loop is a deaf socket). `monitor_loop` reads libzmq's events for one socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from swarmd.transport import bulk
from swarmd.transport import messages as m
from swarmd.transport.context import Context, NodeStats
from swarmd.transport.handler import PeerId

log = logging.getLogger("swarmd.transport")


@dataclass(frozen=True)
class Received:
    """One decoded message, as a side's dispatch sees it."""

    route: bytes | None  # the sender's routing id, on a ROUTER
    peer: PeerId | None  # the sender's CURVE key, where the socket knows it
    msg: m.Message | bulk.BulkChunk | bulk.BulkGrant
    data: list[memoryview]  # the frames after the header (a control chunk's payload)


Dispatch = Callable[[Received], Awaitable[None]]
PeerOf = Callable[[list[zmq.Frame]], PeerId | None]


async def receive_loop(
    ctx: Context,
    sock: zmq.asyncio.Socket,
    dispatch: Dispatch,
    *,
    where: str,
    peer_of: PeerOf,
    routed: bool,
    members_only: bool = False,
    bulk_channel: bool = False,
) -> None:
    """Receive from `sock` until cancelled. `routed`: a ROUTER, whose frame 0 is the routing id;
    `members_only`: drop (`not_member`) what does not come from a current member, before decoding;
    `bulk_channel`: frames in bulk.py's fixed layout, not msgpack."""
    off_loop: Counter[PeerId] = Counter()  # large headers of each peer decoding on a worker thread
    while True:
        # A ready socket's recv completes without yielding: without this, a flood on one socket would
        # starve every other task of the loop (streams' credit, handler calls, the ZAP handler).
        await asyncio.sleep(0)
        frames = await sock.recv_multipart(copy=False)
        ctx.count_in(frames)
        peer = peer_of(frames)
        try:
            head = 1 if routed else 0
            if len(frames) <= head:
                raise m.BadMessage("bad_header", "message without a header frame")
            route = frames[0].bytes if routed else None
            parts = [f.buffer for f in frames[head:]]
            if bulk_channel:
                await dispatch(Received(route, None, bulk.parse(parts), []))
                continue
            if members_only and (peer is None or not ctx.is_member(peer)):
                raise m.BadMessage("not_member", "message from a key that is no longer a member")
            _admit(ctx, peer, sum(len(p) for p in parts))
            if len(parts[0]) <= m.SMALL_FRAME:
                msg = _charged(ctx, peer, *_timed_decode(parts[0], ctx.limits.max_tensors))
                await dispatch(Received(route, peer, msg, parts[1:]))
            elif peer is None or off_loop[peer] < ctx.limits.streams_per_peer:
                if peer is not None:
                    off_loop[peer] += 1
                ctx.spawn(_decode_off_loop(ctx, dispatch, where, off_loop, route, peer, parts))
            else:
                raise m.BadMessage("rate", "too many large headers of this peer decoding at once")
        except Exception as exc:  # noqa: BLE001 (_count logs a bug with its traceback)
            _count(ctx, where, peer, exc)


def _count(ctx: Context, where: str, peer: PeerId | None, exc: Exception) -> None:
    if isinstance(exc, m.BadMessage):
        ctx.reject(exc.reason, peer, str(exc))
    elif isinstance(exc, zmq.ZMQError):
        ctx.reject("unroutable", None, str(exc))
    else:  # the loop must outlive any bug: a dead loop is a deaf socket
        log.error("unexpected error on the %s", where, exc_info=exc)
        ctx.reject("internal_error", peer, repr(exc))


def _admit(ctx: Context, peer: PeerId | None, nbytes: int) -> None:
    """Take a frame from the sender's budget; raise BadMessage("rate") when it is spent."""
    if peer is not None and not ctx.budgets.of(peer, ctx.limits.rates).admit(
        nbytes, ctx.limits.rates, time.monotonic()
    ):
        raise m.BadMessage("rate", "over the peer's message, byte or decode budget")


def _timed_decode(header: memoryview, max_tensors: int) -> tuple[m.Message | m.BadMessage, float]:
    """Decode a header, returning the message (or why not) and the CPU time it took."""
    t0 = time.thread_time()
    try:
        out: m.Message | m.BadMessage = m.decode(header, max_tensors)
    except m.BadMessage as exc:
        out = exc
    return out, time.thread_time() - t0


def _charged(ctx: Context, peer: PeerId | None, out: m.Message | m.BadMessage, seconds: float) -> m.Message:
    if peer is not None:
        ctx.budgets.of(peer, ctx.limits.rates).charge_cpu(seconds, ctx.limits.rates, time.monotonic())
    if isinstance(out, m.BadMessage):
        raise out
    return out


async def _decode_off_loop(
    ctx: Context,
    dispatch: Dispatch,
    where: str,
    off_loop: Counter[PeerId],
    route: bytes | None,
    peer: PeerId | None,
    parts: list[memoryview],
) -> None:
    """Decode a large header (a manifest) on a worker thread, then dispatch it."""
    try:
        out = await asyncio.to_thread(_timed_decode, parts[0], ctx.limits.max_tensors)
        await dispatch(Received(route, peer, _charged(ctx, peer, *out), parts[1:]))
    except Exception as exc:  # noqa: BLE001 (_count logs a bug with its traceback)
        _count(ctx, where, peer, exc)
    finally:
        if peer is not None:
            off_loop[peer] -= 1
            if off_loop[peer] <= 0:
                del off_loop[peer]


async def monitor_loop(
    mon: zmq.asyncio.Socket, stats: NodeStats, on_event: Callable[[int], None] | None = None
) -> None:
    """Count disconnects and hand every event to `on_event`, until the monitor stops."""
    while True:
        event = parse_monitor_message(await mon.recv_multipart())
        kind = int(event["event"])
        if kind == zmq.EVENT_MONITOR_STOPPED:
            return
        if kind == zmq.EVENT_DISCONNECTED:
            stats.disconnects += 1
        if on_event is not None:
            on_event(kind)
