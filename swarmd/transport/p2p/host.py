"""The libp2p host of a site (trio side): its key, its listeners (none for a site that only dials
out), member gating, the circuit relay v2 service when this site relays, and reservations on relays.

Member gating, as ZAP does for ZeroMQ: every connection's remote peer ID names an account (keys.py);
a connection from an account that is not in the member set (`Gate`, fed by the daemon from the
chain's registry) is closed as soon as it is up, before any stream of it is served; every stream
handler and the relay's hop handler check again, so a peer removed from the registry loses its
streams and cannot reserve or be relayed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.connection_types import ConnectionType
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.tools.anyio_service import background_trio_service

from swarmd.errors import TransportError
from swarmd.transport.p2p.keys import account_of

log = logging.getLogger("swarmd.transport.p2p")

# Two tunings of py-libp2p 0.8.1's yamux for bulk streams, both local to the sender or receiver (frame
# sizes and window updates are each side's choice; a go-libp2p peer sees valid yamux either way):
# - By default a reader returns receive window for every read, so a reader taking a few KB at a time
#   (a relay, Noise's 2-byte length prefixes) grants a few KB at a time and the sender cuts its frames
#   to fit. Granting in batches (half the target window, go-yamux's rule) keeps the frames full.
# - A full frame (12-byte header + 65524 bytes) is 17 bytes over one Noise message, so every frame went
#   out as two Noise messages, and through a relay as four. Frames of one Noise message each.
# 28 MB relayed between namespaces on 1 Gbit/s links, 2 quiet cores: 27.9 -> 39.0 MB/s (docs/benchmarks.md).
# An operator's own PY_YAMUX_* setting wins.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
_yamux.MAX_MESSAGE_SIZE = min(_yamux.MAX_MESSAGE_SIZE, MAX_PLAINTEXT_LENGTH)

StreamHandler = Callable[[INetStream, str], Awaitable[None]]


@dataclass
class Gate:
    """The accounts (checksummed addresses) that may talk to this site, and what was refused."""

    members: frozenset[str] = frozenset()
    denied: int = 0
    denied_accounts: dict[str, int] = field(default_factory=dict)

    def admits(self, peer: ID) -> str | None:
        """The member account behind `peer`, or None (and counted) when it is not an active member."""
        account = account_of(peer)
        if account is not None and account in self.members:
            return account
        self.denied += 1
        key = account or str(peer)[:16]
        self.denied_accounts[key] = self.denied_accounts.get(key, 0) + 1
        return None


class _GateNotifee(INotifee):
    """Closes a connection whose remote peer is not a member, as soon as the swarm reports it."""

    def __init__(self, gate: Gate, nursery: trio.Nursery) -> None:
        self._gate, self._nursery = gate, nursery

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if self._gate.admits(peer) is None:
            log.warning("closed a libp2p connection from a non-member peer %s", str(peer)[:20])
            self._nursery.start_soon(conn.close)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


@dataclass(frozen=True)
class HostConfig:
    key: KeyPair
    listen: tuple[str, ...] = ()  # multiaddrs; empty: no listening socket at all (dial out only)
    relay: bool = False  # offer circuit relay v2 to other members
    relay_max_bytes: int = 1 << 30  # per relayed circuit, both directions together
    relay_max_seconds: int = 3600  # per relayed circuit
    relay_max_circuits: int = 16
    relay_max_reservations: int = 16


class P2PHost:
    """A running libp2p host; made and used only inside the trio thread."""

    def __init__(self, config: HostConfig, gate: Gate, handlers: Mapping[str, StreamHandler]) -> None:
        self.config, self.gate, self._handlers = config, gate, handlers
        self.host: IHost = new_host(key_pair=config.key)
        limits = RelayLimits(
            duration=config.relay_max_seconds,
            data=config.relay_max_bytes,
            max_circuit_conns=config.relay_max_circuits,
            max_reservations=config.relay_max_reservations,
        )
        self.protocol = CircuitV2Protocol(self.host, limits=limits, allow_hop=config.relay)
        roles = RelayRole.STOP | RelayRole.CLIENT | (RelayRole.HOP if config.relay else RelayRole(0))
        self.relay_transport = CircuitV2Transport(
            self.host, self.protocol, RelayConfig(roles=roles, limits=limits)
        )
        self._nursery: trio.Nursery | None = None
        self.reservations: dict[str, str] = {}  # relay multiaddr -> our circuit multiaddr through it

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    def addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: listeners, the relay protocol, gating, our stream handlers."""
        listen = [multiaddr.Multiaddr(a) for a in self.config.listen]
        async with self.host.run(listen_addrs=listen), trio.open_nursery() as nursery:
            self._nursery = nursery
            self.host.get_network().register_notifee(_GateNotifee(self.gate, nursery))
            async with background_trio_service(self.protocol):
                if self.config.relay:  # the protocol registered its own hop handler: gate it
                    self.host.set_stream_handler(HOP_PROTOCOL, self._gated(self.protocol._handle_hop_stream))
                for proto, handler in self._handlers.items():
                    self.host.set_stream_handler(TProtocol(proto), self._gated_app(handler))
                task_status.started()
                await trio.sleep_forever()

    def _gated(
        self, inner: Callable[[INetStream], Awaitable[None]]
    ) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            if self.gate.admits(stream.muxed_conn.peer_id) is None:
                await stream.reset()
                return
            await inner(stream)

        return handle

    def _gated_app(self, inner: StreamHandler) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            account = self.gate.admits(stream.muxed_conn.peer_id)
            if account is None:
                await stream.reset()
                return
            try:
                await inner(stream, account)
            finally:
                await _close(stream)

        return handle

    async def reserve(self, relay_addr: str) -> str:
        """Reserve a slot on the relay at `relay_addr` (`.../p2p/<relay id>`); our circuit address there."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(relay_addr))
            self._forget_failure(info.peer_id)
            await self.host.connect(info)
            stream = await self.host.new_stream(info.peer_id, [HOP_PROTOCOL])
            assert self._nursery is not None
            ok = await self.relay_transport.reserve(stream, info.peer_id, self._nursery)
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - libp2p's errors are not one hierarchy
            raise TransportError(f"cannot reach relay {relay_addr}: {type(exc).__name__}: {exc}") from None
        if not ok:
            raise TransportError(f"relay {relay_addr} refused a reservation", hint="is this site a member?")
        circuit = self.circuit(relay_addr)
        self.reservations[relay_addr] = circuit
        return circuit

    def circuit(self, relay_addr: str) -> str:
        return f"{relay_addr}/p2p-circuit/p2p/{self.peer_id}"

    def reserved_on(self, relay_addr: str) -> bool:
        """A reservation was made on this relay and the connection to it is still up."""
        if relay_addr not in self.reservations:
            return False
        relay = info_from_p2p_addr(multiaddr.Multiaddr(relay_addr)).peer_id
        return self.path_to(relay) != "none"

    async def keep_reservations(
        self, relays: tuple[str, ...], interval: float, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold a reservation on every relay: (re)reserve whenever one is missing or its connection
        dropped (a relay restarted, or did not list this site yet), every `interval` seconds."""
        task_status.started()
        failing: set[str] = set()
        while True:
            for relay in relays:
                if self.reserved_on(relay):
                    continue
                self.reservations.pop(relay, None)
                try:
                    await self.reserve(relay)
                except TransportError as exc:
                    if relay not in failing:
                        log.warning("no reservation on relay %s yet: %s", relay, exc)
                    failing.add(relay)
                else:
                    if relay in failing:
                        log.info("reservation on relay %s held again", relay)
                    failing.discard(relay)
            await trio.sleep(interval)

    async def open(self, peer: ID, addrs: list[str], proto: str) -> tuple[INetStream, str]:
        """A stream to `peer` on `proto`, over a live connection or the first of `addrs` that answers;
        the stream and the path it took ("relayed" or "direct")."""
        errors: list[str] = []
        if self.host.get_network().get_connections(peer):
            try:
                return await self.host.new_stream(peer, [TProtocol(proto)]), self.path_to(peer)
            except Exception as exc:  # noqa: BLE001 - a dead connection: dial again below
                errors.append(f"open connection: {type(exc).__name__}")
        for addr in addrs:
            maddr = multiaddr.Multiaddr(addr)
            if f"/p2p/{self.peer_id}/p2p-circuit" in addr:  # our own circuit: its client reached us above
                errors.append(f"{addr}: we are its relay and hold no connection to the peer")
                continue
            try:
                self._forget_failure(peer)
                if "/p2p-circuit" in addr:  # and its relay, which a refused attempt may have marked
                    relay_part = multiaddr.Multiaddr(addr.split("/p2p-circuit", 1)[0])
                    self._forget_failure(info_from_p2p_addr(relay_part).peer_id)
                if self.relay_transport.can_dial(maddr):
                    await self.relay_transport.dial(maddr)
                else:
                    await self.host.connect(PeerInfo(peer, [maddr]))
                return await self.host.new_stream(peer, [TProtocol(proto)]), self.path_to(peer)
            except Exception as exc:  # noqa: BLE001 - try the next address
                errors.append(f"{addr}: {type(exc).__name__}: {exc}")
        raise TransportError(f"no libp2p path to {str(peer)[:20]}: {'; '.join(errors) or 'no address'}")

    def _forget_failure(self, peer: ID) -> None:
        """Dial `peer` now even if a dial failed lately: py-libp2p 0.8.1 refuses to redial a peer for
        60 s after one failure (`Swarm._negative_peer_cache`), which held a private site without its
        reservation for a minute after it started before its relay; our own callers pace retries."""
        cache = getattr(self.host.get_network(), "_negative_peer_cache", None)
        if cache is not None:
            cache.evict(str(peer))

    def path_to(self, peer: ID) -> str:
        """ "direct" when a live connection to `peer` is not relayed, else "relayed" (or "none")."""
        conns = [c for c in self.host.get_network().get_connections(peer) if not c.is_closed]
        if not conns:
            return "none"
        return "direct" if any(_path_of(c) == "direct" for c in conns) else "relayed"


def _path_of(conn: INetConn) -> str:
    kind = getattr(conn, "get_connection_type", lambda: None)()
    addrs = [str(a) for a in getattr(conn, "get_transport_addresses", lambda: [])()]
    relayed = kind is ConnectionType.RELAYED or any("p2p-circuit" in a for a in addrs)
    return "relayed" if relayed else "direct"


async def _close(stream: INetStream) -> None:
    try:
        await stream.close()
    except Exception:  # noqa: BLE001 - closing a broken stream: nothing left to do
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001
            return
