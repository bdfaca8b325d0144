"""How this site is reached (issue 18): the ZeroMQ `Node` alone, or, when site.toml asks for the
libp2p path (`reachability = "private"`, `relay = true` or a `p2p_bind`), a `HybridNode` that adds
it; and the per-peer paths it reports to `swarm status` and Prometheus.

The libp2p extra is imported only here and only when asked for, so a site without it runs as before
and a site that needs it and lacks it stops with the install hint (`P2PUnavailable`).
"""

from __future__ import annotations

import logging
from typing import Any

from swarmd.config import TransportSection
from swarmd.daemon.ports import Transport
from swarmd.identity import SiteIdentity
from swarmd.transport import Handler, Node

log = logging.getLogger("swarmd.reach")


def make_transport(t: TransportSection, ident: SiteIdentity, handler: Handler, max_bytes: int) -> Node:
    """The site's transport: a `Node`, or a `HybridNode` (ZeroMQ + libp2p) when the config asks."""
    node = Node(
        handler,
        bind="" if t.private else t.bind,
        public_key=ident.curve.public,
        secret_key=ident.curve.secret,
        max_bytes=max_bytes,
        bulk="curve" if t.bulk == "curve" else "aead",
        bulk_bind=t.bulk_bind or None,
    )
    if not t.uses_p2p:
        return node
    from swarmd.transport.p2p import require

    require()
    from swarmd.transport.p2p.hybrid import HybridNode
    from swarmd.transport.p2p.service import P2PConfig, P2PService

    config = P2PConfig(
        listen=(t.p2p_bind,) if t.p2p_bind and not t.private else (),
        relay=t.relay,
        relays=tuple(t.relays.split()) if t.private else (),
    )
    p2p = P2PService(handler, account_key=bytes(ident.account.key), max_bytes=max_bytes, config=config)
    log.info("libp2p peer id %s (%s)", p2p.peer_id, "private: relayed" if t.private else "public")
    hybrid: Transport = HybridNode(node, p2p)  # mypy holds HybridNode to the daemon's Transport protocol
    # typed as Node for the daemon's fields, which also use Node's lifecycle
    return hybrid  # type: ignore[return-value]


def peer_paths(node: object) -> dict[str, dict[str, Any]]:
    """{site label: {"path", "bytes_out", "bytes_in"}} for a `HybridNode`; {} for a plain Node."""
    routes = getattr(node, "routes", None)
    if routes is None:
        return {}
    labels: dict[bytes, str] = node.labels()  # type: ignore[attr-defined]
    out: dict[str, dict[str, Any]] = {}
    for peer, r in routes().items():
        name = labels.get(peer, peer.hex()[:12])
        out[name] = {"path": r.path, "bytes_out": dict(r.bytes_out), "bytes_in": dict(r.bytes_in)}
    return out


def advertised_check(t: TransportSection, node: object) -> None:
    """Warn when a private site's endpoint (what peers dial, on chain) is not one of its circuits."""
    p2p = getattr(node, "p2p", None)
    if p2p is None or not t.private:
        return
    circuits = p2p.addresses()
    if not any(c in t.endpoint.split() for c in circuits):
        log.warning(
            "transport.endpoint %r is not a circuit of this site; peers cannot reach it. Advertise %s "
            "(the endpoint given at `swarm join`)",
            t.endpoint,
            circuits[0] if circuits else "a circuit through a relay",
        )
