"""`Daemon.startup` on a real chain and a real transport: the member list is read before the daemon
listens, so a member that connects the moment the sockets are bound (as every peer of a restarted site
does: ZeroMQ reconnects on its own) is admitted at its first CURVE handshake, not refused."""

from __future__ import annotations

import gc

import pytest

from swarmd.config import load_config
from swarmd.daemon.app import Daemon
from swarmd.daemon.site import site_identity
from swarmd.transport import FetchOnly, Node

pytestmark = [pytest.mark.slow, pytest.mark.chain]


async def test_a_member_connecting_as_the_daemon_starts_listening_is_admitted_at_once(
    swarm_root, swarm_factory
):
    with swarm_factory(swarm_root, sites=2, rounds=1, start=False) as swarm:
        here, there = (load_config(s.config) for s in swarm.consortium.sites)
        daemon = Daemon(here)
        ident = site_identity(there)
        peer = Node(
            FetchOnly("not a leader"),
            bind="",
            public_key=ident.curve.public,
            secret_key=ident.curve.secret,
            max_bytes=1 << 20,
        )
        try:
            await daemon.startup()  # listening now; the main loop (rounds) never starts in this test
            assert daemon.node is not None
            await peer.start()
            key = daemon.node.peer_id
            peer.set_peers({key: daemon.node.endpoint})
            # Within REFUSAL_KEPT (1 s): a refused first handshake would fail this ping, not be retried.
            await peer.ping(key, timeout=0.8)
            assert daemon.node.stats.handshakes_denied == 0
        finally:
            await peer.close()
            await daemon.shutdown()
            gc.unfreeze()  # start-up froze this test process's heap (`settle_heap`)
