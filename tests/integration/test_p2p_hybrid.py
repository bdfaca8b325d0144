"""ZeroMQ and libp2p behind one transport (`HybridNode`), on 127.0.0.1: a private site (no ZeroMQ
listener, a reservation on a relay) is reached over libp2p for every call, dials public sites over
ZeroMQ itself, and a public site whose ZeroMQ endpoint cannot be dialled is reached over libp2p."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

import torch
import zmq
from eth_account import Account
from zmq.utils import z85

from swarmd import codec
from swarmd.transport import Node
from swarmd.transport.handler import AnnounceHeader, PeerId, SecAggHeader, UpdateHeader, Verdict
from swarmd.transport.messages import SecAggTopic
from swarmd.transport.p2p.hybrid import HybridNode
from swarmd.transport.p2p.service import P2PConfig, P2PService

STATE = {"w": torch.arange(300_000, dtype=torch.float32)}
MODEL = codec.encode(STATE)


class Recorder:
    def __init__(self) -> None:
        self.updates: list[PeerId] = []
        self.announces: list[int] = []

    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        return Verdict(True)

    async def on_update(self, peer: PeerId, header: UpdateHeader, state: Any, digest: bytes) -> Verdict:
        self.updates.append(peer)
        return Verdict(True)

    async def on_announce(self, peer: PeerId, header: AnnounceHeader) -> None:
        self.announces.append(header.round)

    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        return b"echo:" + body

    def serve_model(self, model_hash: bytes) -> Any:  # by either name (codec.hash_against)
        names = (codec.hash_frames(*MODEL), codec.hash_frames(*MODEL, legacy=True))
        return MODEL if model_hash in names else None


def _site(bind: str, config: P2PConfig) -> tuple[HybridNode, bytes]:
    public, secret = zmq.curve_keypair()
    handler = Recorder()
    node = Node(handler, bind=bind, public_key=public, secret_key=secret, max_bytes=8 << 20)
    key = bytes(Account.create().key)
    p2p = P2PService(handler, account_key=key, max_bytes=8 << 20, config=config)
    hybrid = HybridNode(node, p2p)
    hybrid.set_limits(dataclasses.replace(node.limits, request_timeout=3.0))
    return hybrid, z85.decode(public)


@pytest.fixture
async def sites() -> AsyncIterator[dict[str, tuple[HybridNode, bytes]]]:
    a = _site("tcp://127.0.0.1:*", P2PConfig(listen=("/ip4/127.0.0.1/tcp/0",), relay=True))
    b = _site("tcp://127.0.0.1:*", P2PConfig())
    started: list[HybridNode] = []
    try:
        await a[0].start()
        started.append(a[0])
        relay = a[0].p2p.addresses()[0]
        c = _site("", P2PConfig(relays=(relay,)))
        accounts = {a[1]: a[0].p2p, b[1]: b[0].p2p, c[1]: c[0].p2p}
        pre = {k: f"tcp://127.0.0.1:1 /p2p/{svc.peer_id}" for k, svc in accounts.items()}  # accounts known
        for site in (a, b, c):  # both ends gate: each must know the others' accounts first
            site[0].set_peers({k: v for k, v in pre.items() if k != site[1]})
        for site in (b, c):
            await site[0].start()
            started.append(site[0])
        await c[0].p2p.wait_reserved(10.0)
        endpoints = {
            a[1]: f"{a[0].node.endpoint} {relay}",
            b[1]: f"{b[0].node.endpoint} /p2p/{b[0].p2p.peer_id}",
            c[1]: c[0].p2p.addresses()[0],  # private: only its circuit
        }
        for me, _ in (a, b, c):
            me.set_peers({k: v for k, v in endpoints.items() if me.p2p is not accounts[k]})
        yield {"a": a, "b": b, "c": c}
    finally:
        for node in reversed(started):
            await node.close()


async def test_a_private_site_is_reached_over_libp2p_and_dials_out_over_zeromq(
    sites: dict[str, tuple[HybridNode, bytes]],
) -> None:
    (b, b_key), (c, c_key) = sites["b"], sites["c"]
    assert c.node.endpoint == "" and c.p2p.host.addrs() == []  # no listener of either kind
    assert (await b.send_update(c_key, round=1, term=1, state=STATE)).ok
    await b.announce(c_key, round=4, model_hash=b"\x02" * 32)
    assert await b.secagg(c_key, round=1, topic=SecAggTopic.SHARES, body=b"hi") == b"echo:hi"
    got = await b.fetch_model(c_key, codec.hash_frames(*MODEL), max_bytes=8 << 20)
    assert torch.equal(got["w"], STATE["w"])
    assert c.handler.updates == [b_key] and c.handler.announces == [4]  # type: ignore[attr-defined]
    route = b.routes()[c_key]
    assert route.path == "relayed" and route.bytes_in["relayed"] == 1_200_000
    # a model named before protocol 4 is fetched and checked by its v1 hash
    old = await b.fetch_model(c_key, codec.hash_frames(*MODEL, legacy=True), max_bytes=8 << 20)
    assert torch.equal(old["w"], STATE["w"])
    assert (await c.send_update(b_key, round=1, term=1, state=STATE)).ok  # C dials B's ZeroMQ port
    assert b.handler.updates == [c_key]  # type: ignore[attr-defined]
    assert c.routes()[b_key].path == "zmq" and c.routes()[b_key].bytes_out["zmq"] == 1_200_000


async def test_a_public_site_whose_zeromq_endpoint_cannot_be_dialled_is_reached_over_libp2p(
    sites: dict[str, tuple[HybridNode, bytes]],
) -> None:
    (a, a_key), (b, _) = sites["a"], sites["b"]
    relay = a.p2p.addresses()[0]
    peers = dict(b.node._ctx.members)
    peers[a_key] = f"tcp://127.0.0.1:1 {relay}"  # nothing listens on port 1
    b.set_peers({k: (v if k == a_key else _advertised(sites, k)) for k, v in peers.items()})
    verdict = await b.send_update(a_key, round=1, term=1, state=STATE)
    assert verdict.ok
    assert b.routes()[a_key].path == "direct"  # libp2p, straight to A's listener
    assert a.handler.updates  # type: ignore[attr-defined]


def _advertised(sites: dict[str, tuple[HybridNode, bytes]], key: bytes) -> str:
    for node, k in sites.values():
        if k == key:
            return (
                f"{node.node.endpoint} /p2p/{node.p2p.peer_id}"
                if node.node.endpoint
                else node.p2p.addresses()[0]
            )
    raise KeyError(key)
