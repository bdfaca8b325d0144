"""The libp2p path between real processes in network namespaces made here: site C has no listening
socket (it only dials out) and holds a reservation on site A's relay; site B reaches C only through
that relay, sends it an update and fetches its model; a non-member in a fourth namespace reaches the
relay but cannot open a stream to any site.

Skips, with the reason, where namespaces cannot be made or the p2p extra is missing. About 15-25 s,
most of it four processes importing torch and libp2p."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

from eth_account import Account

from swarmd.ops.netns import NetnsUnavailable, WanNet, list_namespaces

pytestmark = pytest.mark.multiproc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = {name: bytes(Account.create().key) for name in "abcx"}


def _curve(name: str) -> str:
    return (name * 32).encode().hex()  # the CURVE key the daemon would name the site by


MEMBERS = {_curve(n): [Account.from_key(KEYS[n]).address, []] for n in "abc"}  # x is no member


class Peer:
    """One `swarmd.bench.p2p_peer` process in a namespace, driven by JSON lines."""

    def __init__(self, net: WanNet, name: str, spec: dict[str, Any], members: dict[str, Any]) -> None:
        self.key = KEYS[name]
        self.curve = _curve(name)
        spec = {**spec, "members": members}
        argv = net.nodes[name].argv(
            [sys.executable, "-m", "swarmd.bench.p2p_peer", json.dumps({**spec, "key": self.key.hex()})]
        )
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()
        assert self.info.get("ready"), self.info

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"peer exited with {self.proc.wait(5)}")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError, BrokenPipeError, ValueError):
                self.ask(op="quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def net() -> Iterator[WanNet]:
    wan = WanNet()
    try:
        wan.create()
        for name in ("a", "b", "c", "x"):
            wan.add(name, None)
    except NetnsUnavailable as exc:
        wan.teardown()
        pytest.skip(f"network namespaces unavailable here: {exc}")
    try:
        yield wan
    finally:
        wan.teardown()
        assert not [ns for ns in list_namespaces() if ns.startswith(wan.tag)]


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
