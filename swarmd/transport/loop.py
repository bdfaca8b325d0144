"""The node's socket loops, one skeleton each.

`receive_loop` is what every receiving socket (control ROUTER, bulk ROUTER, each DEALER) runs:
receive a message, count it, check its envelope and decode its header, hand it to the side's
dispatch, and count and drop whatever is bad, so a bad frame or a bug never ends the loop (a dead
loop is a deaf socket). `monitor_loop` reads libzmq's events for one socket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from swarmd.transport import messages as m
from swarmd.transport.context import Context, NodeStats
from swarmd.transport.handler import PeerId

log = logging.getLogger("swarmd.transport")


@dataclass(frozen=True)
class Received:
    """One decoded message, as a side's dispatch sees it."""

    route: bytes | None  # the sender's routing id, on a ROUTER
    peer: PeerId | None  # the sender's CURVE key, where the socket knows it
    msg: m.Message
    data: list[memoryview]  # the frames after the header (a chunk's payload)


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
) -> None:
    """Receive from `sock` until cancelled. `routed`: a ROUTER, whose frame 0 is the routing id;
    `members_only`: drop (`not_member`) what does not come from a current member, before decoding."""
    while True:
        frames = await sock.recv_multipart(copy=False)
        ctx.count_in(frames)
        peer = peer_of(frames)
        try:
            await dispatch(_parse(ctx, frames, peer, routed=routed, members_only=members_only))
        except m.BadMessage as exc:
            ctx.reject(exc.reason, peer, str(exc))
        except zmq.ZMQError as exc:
            ctx.reject("unroutable", None, str(exc))
        except Exception as exc:  # the loop must outlive any bug: a dead loop is a deaf socket
            log.exception("unexpected error on the %s", where)
            ctx.reject("internal_error", peer, repr(exc))


def _parse(
    ctx: Context, frames: list[zmq.Frame], peer: PeerId | None, *, routed: bool, members_only: bool
) -> Received:
    head = 1 if routed else 0
    if len(frames) <= head:
        raise m.BadMessage("bad_header", "message without a header frame")
    if members_only and (peer is None or not ctx.is_member(peer)):
        raise m.BadMessage("not_member", "message from a key that is no longer a member")
    msg = m.decode(frames[head].buffer)
    route = frames[0].bytes if routed else None
    return Received(route, peer, msg, [f.buffer for f in frames[head + 1 :]])


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
