"""The libp2p path into sites that cannot accept connections (issue 18): an optional extra,
`pip install swarmd[p2p]` (py-libp2p on trio, in its own thread).

ZeroMQ stays the data path between sites that reach each other; this package carries the same
messages, limits and hash checks over a libp2p stream, relayed (circuit relay v2) through a public
member when the peer has no listening socket. Import `swarmd.transport.p2p.service` only after
`available()` says yes; `require()` raises a named error with the install hint otherwise.
"""

from __future__ import annotations

import importlib.util

from swarmd.errors import TransportError


class P2PUnavailable(TransportError):
    """The libp2p extra is not installed."""


def available() -> bool:
    """True when py-libp2p and trio can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("libp2p", "trio", "multiaddr"))


def require() -> None:
    if not available():
        raise P2PUnavailable(
            "this site needs the libp2p path (reachability private, or relay = true), which is not installed",
            hint="pip install 'swarmd[p2p]' (scripts/bootstrap installs it)",
        )
