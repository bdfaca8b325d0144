"""ZeroMQ and libp2p behind one transport: the daemon calls `HybridNode` as it calls `Node` and does
not know which path carried an update.

Routing per peer, from its advertised endpoint (endpoints.py): a peer with a ZeroMQ endpoint is
dialled over ZeroMQ; a peer without one (a private site) over libp2p, through the relay in its
circuit address. When a ZeroMQ call fails for a reason other than a refusal (the peer cannot be
dialled, or dropped mid-transfer) and the peer has a libp2p identity, the call is made again over
libp2p, and ZeroMQ is not tried for that peer for `retry_direct_after` seconds. Every member, private
or not, stays in the ZeroMQ member set so that ZAP admits the connections a private site dials out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from libp2p.peer.id import ID

from swarmd.errors import ConfigError, PeerRejected, TransportError
from swarmd.transport import messages as m
from swarmd.transport.context import Limits, NodeStats
from swarmd.transport.handler import Handler, PeerId, Verdict
from swarmd.transport.node import Node
from swarmd.transport.p2p import endpoints, keys
from swarmd.transport.p2p.service import P2PPeer, P2PService

log = logging.getLogger("swarmd.transport.p2p")

T = TypeVar("T")
ZMQ = "zmq"
# Refusals a receiver gives once the whole payload arrived; the others come before the first chunk (an
# elected site that is not leading yet answers not_ready to every offer, however often it is made).
_REFUSED_AFTER_PAYLOAD = frozenset({m.Refusal.HASH_MISMATCH, m.Refusal.INVALID, m.Refusal.HANDLER_ERROR})


@dataclass
class PeerRoute:
    """How a peer is reached and the model bytes moved per path ("zmq", "direct", "relayed")."""

    path: str = "none"
    bytes_out: dict[str, int] = field(default_factory=dict)
    bytes_in: dict[str, int] = field(default_factory=dict)


class HybridNode:
    """`Node` (ZeroMQ) with the libp2p path beside it; the daemon's `Transport`."""

    def __init__(self, node: Node, p2p: P2PService, *, retry_direct_after: float = 60.0) -> None:
        self.node, self.p2p = node, p2p
        self.retry_direct_after = retry_direct_after
        self._zmq: dict[PeerId, str] = {}
        self._libp2p: set[PeerId] = set()
        self._direct_failed: dict[PeerId, float] = {}
        self._zmq_bytes: dict[PeerId, PeerRoute] = {}

    # --- what Node offers -------------------------------------------------------------------------
    @property
    def handler(self) -> Handler:
        return self.node.handler

    @property
    def limits(self) -> Limits:
        return self.node.limits

    def set_limits(self, limits: Limits) -> None:
        self.node.set_limits(limits)
        self.p2p.limits = limits

    @property
    def stats(self) -> NodeStats:
        return self.node.stats

    @property
    def peer_id(self) -> PeerId:
        return self.node.peer_id

    @property
    def max_bytes(self) -> int:
        return self.node.max_bytes

    async def start(self) -> None:
        await self.node.start()
        try:
            await self.p2p.start()
        except BaseException:
            await self.node.close()
            raise

    async def close(self) -> None:
        await self.p2p.close()
        await self.node.close()

    def set_peers(self, peers: Mapping[PeerId, str], labels: Mapping[PeerId, str] | None = None) -> None:
        """{CURVE key: advertised endpoint}: ZeroMQ endpoints to the node, libp2p ones to the p2p path."""
        zmq: dict[PeerId, str] = {}
        p2p: dict[PeerId, P2PPeer] = {}
        for key, text in peers.items():
            try:
                ep = endpoints.parse(text)
            except ConfigError as exc:
                log.warning("member %s advertises an endpoint this site cannot use: %s", key.hex()[:12], exc)
                continue
            if ep.zmq is not None:
                zmq[bytes(key)] = ep.zmq
            account = keys.account_of(ID.from_base58(ep.peer_id)) if ep.peer_id else None
            if account is not None:
                p2p[bytes(key)] = P2PPeer(account, ep.dialable)
        # ZAP must admit a private member's outbound connections: it stays in the ZeroMQ member set
        # (under its advertised text, which ZeroMQ never dials: `_route` sends its traffic to libp2p).
        self.node.set_peers({**{k: peers[k] for k in p2p}, **zmq}, labels)
        self.p2p.set_peers(p2p)
        self._zmq, self._libp2p = zmq, set(p2p)

    def labels(self) -> dict[PeerId, str]:
        """Members' names for log lines and status (what the daemon passed to `set_peers`)."""
        return dict(self.node._ctx.labels)

    def routes(self) -> dict[PeerId, PeerRoute]:
        """Per peer: how it is reached now ("zmq", or libp2p's "direct"/"relayed"; "libp2p" before the
        first stream) and the model bytes per path that this site sent and fetched, plus what it
        received over libp2p (inbound ZeroMQ bytes are in `stats`, not per peer)."""
        out: dict[PeerId, PeerRoute] = {}
        for peer in sorted(set(self._zmq) | self._libp2p):
            p, z = self.p2p.paths.get(peer), self._zmq_bytes.get(peer)
            route = PeerRoute()
            for src in (z, p):
                if src is not None:
                    route.bytes_out.update(src.bytes_out)
                    route.bytes_in.update(src.bytes_in)
            if self._route(peer) == ZMQ:
                route.path = ZMQ
            else:
                route.path = p.path if p is not None and p.path != "none" else "libp2p"
            out[peer] = route
        return out

    # --- routing ----------------------------------------------------------------------------------
    def _route(self, peer: PeerId) -> str:
        failed = self._direct_failed.get(peer)
        if failed is not None and time.monotonic() - failed > self.retry_direct_after:
            del self._direct_failed[peer]
            failed = None
        if peer in self._zmq and failed is None:
            return ZMQ
        if peer in self._libp2p:
            return "libp2p"
        raise PeerRejected("not a member this site can reach", hint="see `swarm ledger members`")

    async def _call(
        self, peer: PeerId, direct: Callable[[], Awaitable[T]], relayed: Callable[[], Awaitable[T]]
    ) -> T:
        if self._route(peer) == ZMQ:
            try:
                return await direct()
            except PeerRejected:
                raise
            except TransportError as exc:
                if peer not in self._libp2p:
                    raise
                self._direct_failed[peer] = time.monotonic()
                log.warning("ZeroMQ to %s failed (%s); trying libp2p", peer.hex()[:12], exc)
        return await relayed()

    def _count(self, peer: PeerId, out: int = 0, inn: int = 0) -> None:
        r = self._zmq_bytes.setdefault(peer, PeerRoute(path=ZMQ))
        r.bytes_out[ZMQ] = r.bytes_out.get(ZMQ, 0) + out
        r.bytes_in[ZMQ] = r.bytes_in.get(ZMQ, 0) + inn

    # --- the calls --------------------------------------------------------------------------------
    async def send_update(
        self,
        peer: PeerId,
        *,
        round: int,
        term: int,
        state: Mapping[str, torch.Tensor] | None = None,
        timeout: float | None = None,
        digest: bytes | None = None,
    ) -> Verdict:
        async def direct() -> Verdict:
            verdict = await self.node.send_update(
                peer, round=round, term=term, state=state, timeout=timeout, digest=digest
            )
            if verdict.ok or verdict.reason in _REFUSED_AFTER_PAYLOAD:  # else no payload byte moved
                self._count(peer, out=sum(t.numel() * t.element_size() for t in (state or {}).values()))
            return verdict

        async def relayed() -> Verdict:
            return await self.p2p.send_update(peer, round=round, term=term, state=state, digest=digest)

        return await self._call(peer, direct, relayed)

    async def announce(
        self, peer: PeerId, *, round: int, model_hash: bytes, timeout: float | None = None
    ) -> None:
        await self._call(
            peer,
            lambda: self.node.announce(peer, round=round, model_hash=model_hash, timeout=timeout),
            lambda: self.p2p.announce(peer, round=round, model_hash=model_hash, timeout=timeout),
        )

    async def secagg(
        self, peer: PeerId, *, round: int, topic: m.SecAggTopic, body: bytes, timeout: float | None = None
    ) -> bytes:
        return await self._call(
            peer,
            lambda: self.node.secagg(peer, round=round, topic=topic, body=body, timeout=timeout),
            lambda: self.p2p.secagg(peer, round=round, topic=topic, body=body, timeout=timeout),
        )

    async def ping(self, peer: PeerId, *, timeout: float | None = None) -> float:
        return await self._call(
            peer, lambda: self.node.ping(peer, timeout=timeout), lambda: self.p2p.ping(peer, timeout=timeout)
        )

    async def fetch_model(
        self,
        peer: PeerId,
        model_hash: bytes,
        *,
        max_bytes: int,
        timeout: float | None = None,
        relay: Callable[[], object] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`relay` (cut-through serving) applies to ZeroMQ downloads; a libp2p one is served onward
        once it is whole."""

        async def direct() -> dict[str, torch.Tensor]:
            state = await self.node.fetch_model(
                peer, model_hash, max_bytes=max_bytes, timeout=timeout, relay=relay
            )
            self._count(peer, inn=sum(t.numel() * t.element_size() for t in state.values()))
            return state

        async def relayed() -> dict[str, torch.Tensor]:
            try:
                return await asyncio.wait_for(
                    self.p2p.fetch_model(peer, model_hash, max_bytes=max_bytes), timeout
                )
            except asyncio.TimeoutError:
                raise TransportError(f"fetch over libp2p timed out after {timeout} s") from None

        return await self._call(peer, direct, relayed)
