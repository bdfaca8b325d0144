"""Model exchange over ZeroMQ: CURVE-authenticated peers, chunked credit-flow streams, limits.

Public API (see node.py and handler.py for details):

    node = Node(handler, bind="tcp://0.0.0.0:7700", public_key=z85, secret_key=z85, max_bytes=...)
    await node.start(); node.set_peers({raw_curve_key: "tcp://host:port", ...})
    verdict = await node.send_update(peer, round=r, term=t, state=sd, meta={...})
    await node.announce(peer, round=r, model_hash=h)
    state = await node.fetch_model(peer, h, max_bytes=...)
    rtt = await node.ping(peer)
    node.stats.rejections["reason"]; await node.close()

The daemon implements `Handler` (check_offer, on_update, on_announce, serve_model); a refusal's
reason is a `Refusal`.

Layout, one file per role: node.py the front (lifecycle, ZAP, member set, stats, limits);
server.py the serving side (ROUTERs); client.py the client side (a DEALER per peer, our requests);
loop.py the shared receive and monitor loops; flow.py the open streams, their credit flow and the
admission of inbound ones; context.py the state the sides share; budget.py per-peer token buckets;
stream.py one stream's ends; messages.py the control wire format; bulk.py the bulk one (fixed layout).
"""

from swarmd.transport.handler import (
    AnnounceHeader,
    FetchOnly,
    Handler,
    PeerId,
    SecAggHeader,
    UpdateHeader,
    Verdict,
)
from swarmd.transport.messages import PROTOCOL_VERSION, BadMessage, Refusal, SecAggTopic
from swarmd.transport.node import Limits, Node, NodeStats

__all__ = [
    "PROTOCOL_VERSION",
    "AnnounceHeader",
    "BadMessage",
    "FetchOnly",
    "Handler",
    "Limits",
    "Node",
    "NodeStats",
    "PeerId",
    "Refusal",
    "SecAggHeader",
    "SecAggTopic",
    "UpdateHeader",
    "Verdict",
]
