"""A devnet in which some sites are reachable only through a relay (issue 18; `swarm devnet run
--private-sites N`): site 0 is public and relays (circuit relay v2 on a libp2p port of its own), the
last N sites accept no connection at all (no ZeroMQ socket, no libp2p listener) and advertise their
circuit through site 0; the others are public and advertise their libp2p peer ID beside their
ZeroMQ endpoint, so that the private sites admit them.

Peer IDs are derived from the sites' account keys before anything starts (keys.py), so every
endpoint is known when the sites join.
"""

from __future__ import annotations

from typing import Any

from swarmd.errors import ConfigError


def p2p_transports(
    keys: list[str], hosts: list[str], ports: list[int], relay_port: int, private_sites: int
) -> list[dict[str, Any]]:
    """Per site, the TransportSection fields that put it on the libp2p path (see the module doc)."""
    from swarmd.transport.p2p import require

    require()
    from swarmd.transport.p2p.keys import peer_id

    n = len(keys)
    if not 1 <= private_sites <= n - 1:
        raise ConfigError(f"--private-sites must be 1 to {n - 1} with {n} sites (site 0 relays)")
    ids = [str(peer_id(bytes.fromhex(k.removeprefix("0x")))) for k in keys]
    relay = f"/ip4/{hosts[0]}/tcp/{relay_port}/p2p/{ids[0]}"
    out: list[dict[str, Any]] = [
        {
            "endpoint": f"tcp://{hosts[0]}:{ports[0]} {relay}",
            "relay": True,
            "p2p_bind": f"/ip4/{hosts[0]}/tcp/{relay_port}",
        }
    ]
    for i in range(1, n):
        if i >= n - private_sites:
            out.append(
                {
                    "bind": "",
                    "endpoint": f"{relay}/p2p-circuit/p2p/{ids[i]}",
                    "reachability": "private",
                    "relays": relay,
                }
            )
        else:
            out.append({"endpoint": f"tcp://{hosts[i]}:{ports[i]} /p2p/{ids[i]}"})
    return out
