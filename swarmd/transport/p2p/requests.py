"""Small requests on the libp2p path (trio side): ping, announce and secure-aggregation messages,
one stream each, with the same messages and answers as on ZeroMQ (server.py's `_on_announce`,
`_on_secagg`). A handler's failure is answered as `handler_error`, never raised into libp2p."""

from __future__ import annotations

import asyncio
import logging
import time

import trio
from libp2p.abc import INetStream

from swarmd.errors import PeerRejected, TransportError
from swarmd.transport import messages as m
from swarmd.transport.handler import AnnounceHeader, Handler, PeerId, SecAggHeader, Verdict
from swarmd.transport.messages import Refusal
from swarmd.transport.p2p import wire
from swarmd.transport.p2p.runtime import to_asyncio

log = logging.getLogger("swarmd.transport.p2p")

REQUEST_PROTO = f"/swarmd/request/{m.PROTOCOL_VERSION}"


async def answer(handler: Handler, loop: asyncio.AbstractEventLoop, peer: PeerId, stream: INetStream) -> None:
    """Serve one request on `stream` from member `peer`."""
    msg = await wire.recv_msg(stream, 64)
    reply: m.Message
    try:
        if isinstance(msg, m.Ping):
            reply = m.Pong(msg.req, msg.sent)
        elif isinstance(msg, m.Announce):
            await to_asyncio(loop, handler.on_announce(peer, AnnounceHeader(msg.round, msg.model_hash)))
            reply = m.Reply(msg.req, True)
        elif isinstance(msg, m.SecAgg):
            out = await to_asyncio(
                loop, handler.on_secagg(peer, SecAggHeader(msg.round, msg.topic), msg.body)
            )
            if isinstance(out, Verdict):
                reply = m.Reply(
                    msg.req, False, out.reason or Refusal.PRIVACY_REFUSED, out.detail[: m.MAX_TEXT]
                )
            else:
                reply = m.SecAggReply(msg.req, out)
        else:
            reply = m.Reply(0, False, Refusal.BAD_STREAM, f"{msg.KIND} is not a request")
    except Exception as exc:  # a handler bug must not end the path (logged with its traceback)
        log.exception("%s handler failed on the libp2p path", msg.KIND)
        reply = m.Reply(getattr(msg, "req", 0), False, Refusal.HANDLER_ERROR, type(exc).__name__)
    await wire.send_msg(stream, reply)


async def ask(stream: INetStream, msg: m.Message, timeout: float) -> m.Message:
    """Send `msg` and return the answer; TransportError when none comes within `timeout`."""
    try:
        await wire.send_msg(stream, msg)
        with trio.fail_after(timeout):
            return await wire.recv_msg(stream, 64)
    except trio.TooSlowError:
        raise TransportError(f"no answer to {msg.KIND} over libp2p within {timeout:.0f} s") from None
    except wire.StreamBroken as exc:
        raise TransportError(f"{msg.KIND} over libp2p failed: {exc.reason}: {exc}") from None


def ping(sent: float) -> m.Ping:
    return m.Ping(1, sent)


def rtt(answer: m.Message) -> float:
    if not isinstance(answer, m.Pong):
        raise PeerRejected(f"ping answered with {answer.KIND}")
    return time.monotonic() - answer.sent
