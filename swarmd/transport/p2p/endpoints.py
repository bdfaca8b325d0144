"""A member's endpoint as advertised on chain (`requestJoin`, `updateEndpoint`; at most 256 bytes),
extended for the libp2p path without a contract change: space-separated parts, each either the
ZeroMQ endpoint or a libp2p multiaddr ending in `/p2p/<peer id>`.

- `tcp://a.org:7700`: ZeroMQ only (every site before issue 18);
- `tcp://a.org:7700 /dns4/a.org/tcp/7702/p2p/16Uiu2...`: public, also listening on libp2p (a relay);
- `tcp://b.org:7700 /p2p/16Uiu2...`: public, speaks libp2p (its peer ID) without a libp2p listener;
- `/dns4/a.org/tcp/7702/p2p/16Uiu2.../p2p-circuit/p2p/16Uiu2...`: private, reached only through that relay.

Pure parsing: importable without the p2p extra.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmd.errors import ConfigError

MAX_ENDPOINT_BYTES = 256  # the ledger's limit (SwarmLedger.MAX_ENDPOINT_BYTES)


@dataclass(frozen=True)
class Endpoint:
    zmq: str | None  # tcp:// or ipc:// endpoint, None for a site that accepts no connection
    multiaddrs: tuple[str, ...] = ()

    @property
    def peer_id(self) -> str | None:
        """The libp2p peer ID this endpoint names (the last `/p2p/` component of any multiaddr)."""
        for addr in self.multiaddrs:
            _, sep, tail = addr.rpartition("/p2p/")
            if sep and tail:
                return tail
        return None

    @property
    def dialable(self) -> tuple[str, ...]:
        """The multiaddrs that can be dialled (a bare `/p2p/<id>` names a peer but no address)."""
        return tuple(a for a in self.multiaddrs if not a.startswith("/p2p/"))

    @property
    def private(self) -> bool:
        return self.zmq is None

    def render(self) -> str:
        text = " ".join(([self.zmq] if self.zmq else []) + list(self.multiaddrs))
        if not text or len(text.encode()) > MAX_ENDPOINT_BYTES:
            raise ConfigError(
                f"an endpoint is 1 to {MAX_ENDPOINT_BYTES} bytes; {text[:80]!r} is {len(text.encode())}",
                hint="advertise one relay circuit, with /dns4 names kept short",
            )
        return text


def parse(text: str) -> Endpoint:
    """Split an advertised endpoint; ConfigError on a part that is neither ZeroMQ nor a multiaddr."""
    zmq: str | None = None
    addrs: list[str] = []
    for part in text.split():
        if part.startswith(("tcp://", "ipc://")):
            if zmq is not None:
                raise ConfigError(f"endpoint {text[:80]!r} has two ZeroMQ endpoints")
            zmq = part
        elif part.startswith("/") and "/p2p/" in part:
            addrs.append(part)
        else:
            raise ConfigError(
                f"endpoint part {part[:80]!r} is neither tcp://host:port nor a multiaddr ending in /p2p/<id>"
            )
    if zmq is None and not addrs:
        raise ConfigError("an endpoint must name a ZeroMQ endpoint or a libp2p multiaddr")
    return Endpoint(zmq, tuple(addrs))
