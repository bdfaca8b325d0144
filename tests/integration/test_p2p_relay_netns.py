"""The libp2p path between real processes in network namespaces made here: site C has no listening
socket (it only dials out) and holds a reservation on site A's relay; site B reaches C only through
that relay, sends it an update and fetches its model; a non-member in a fourth namespace reaches the
relay but cannot open a stream to any site.

Skips, with the reason, where namespaces cannot be made or the p2p extra is missing. About 15-25 s,
most of it four processes importing torch and libp2p."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

from eth_account import Account

from swarmd.bench.relay import PeerProcess
from swarmd.ops.netns import WanNet

pytestmark = pytest.mark.multiproc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = {name: bytes(Account.create().key) for name in "abcx"}


def _curve(name: str) -> str:
    return (name * 32).encode().hex()  # the CURVE key the daemon would name the site by


MEMBERS = {_curve(n): [Account.from_key(KEYS[n]).address, []] for n in "abc"}  # x is no member


class Peer(PeerProcess):
    """One `swarmd.bench.p2p_peer` process in a namespace, driven by JSON lines."""

    def __init__(self, net: WanNet, name: str, spec: dict[str, Any], members: dict[str, Any]) -> None:
        self.key = KEYS[name]
        self.curve = _curve(name)
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
        spec = {**spec, "members": members, "key": self.key.hex()}
        super().__init__(spec, wrap=net.nodes[name].argv([]), env=env)


@pytest.fixture
def net(namespaces) -> Iterator[WanNet]:
    with namespaces(dict.fromkeys("abcx")) as wan:
        yield wan


def _listeners(net: WanNet, name: str) -> str:
    return subprocess.run(
        net.nodes[name].argv(["ss", "-Hltn"]), capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_site_that_only_dials_out_is_reached_through_a_relay_and_strangers_are_not(net: WanNet) -> None:
    peers: list[Peer] = []
    try:
        a = Peer(net, "a", {"listen": [f"/ip4/{net.nodes['a'].ip}/tcp/4001"], "relay": True}, MEMBERS)
        peers.append(a)
        relay = next(addr for addr in a.info["addrs"] if net.nodes["a"].ip in addr)
        c = Peer(net, "c", {"relays": [relay], "model_mb": 2}, MEMBERS)
        peers.append(c)
        b, x = Peer(net, "b", {}, MEMBERS), Peer(net, "x", {}, MEMBERS)
        peers += [b, x]
        assert _listeners(net, "c") == ""  # C has no listening socket at all
        assert c.info["addrs"] == [f"{relay}/p2p-circuit/p2p/{c.info['peer_id']}"]
        members = {p.curve: [p.info["account"], p.info["addrs"]] for p in (a, b, c)}
        for p in (a, b, c, x):
            assert p.ask(op="peers", peers=members) == {"ok": True}

        sent = b.ask(op="send", to=c.curve, mb=2)
        assert sent["ok"], sent
        fetched = b.ask(op="fetch", **{"from": c.curve, "hash": c.info["model_hash"]})
        assert fetched["ok"] and fetched["hash"] == c.info["model_hash"], fetched
        stats_b, stats_c = b.ask(op="stats"), c.ask(op="stats")
        assert stats_b["paths"][c.curve]["path"] == "relayed"
        assert stats_b["paths"][c.curve]["in"]["relayed"] == 2_000_000
        assert stats_c["paths"][b.curve]["in"]["relayed"] == 2_000_000
        assert len(stats_c["received"]) == 1

        refused = x.ask(op="send", to=c.curve, mb=1)  # the relay closes the stranger out
        assert not refused.get("ok"), refused
        taken = x.ask(op="fetch", **{"from": c.curve, "hash": c.info["model_hash"]})
        assert not taken["ok"], taken
        assert a.ask(op="stats")["denied"] >= 1
        assert len(c.ask(op="stats")["received"]) == 1  # C took nothing from it
    finally:
        for p in peers:
            p.stop()
