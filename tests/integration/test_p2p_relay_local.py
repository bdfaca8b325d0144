"""The libp2p path on one host (127.0.0.1): a site with no listening socket, reached through a relay
on a public member, takes updates and serves models with the ZeroMQ path's checks; non-members are
closed out by the relay and by the site itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

import torch
from eth_account import Account

from swarmd import codec
from swarmd.bench.p2p_peer import _Accept
from swarmd.errors import TransportError
from swarmd.transport.messages import Refusal
from swarmd.transport.p2p.service import P2PConfig, P2PPeer, P2PService

A, B, C, X = b"A" * 32, b"B" * 32, b"C" * 32, b"X" * 32  # CURVE keys, as the daemon names peers
STATE = {"w": torch.arange(500_000, dtype=torch.float32), "b": torch.ones(3)}
MODEL = codec.encode(STATE)


def _svc(handler: _Accept, **config: object) -> P2PService:
    return P2PService(
        handler, account_key=bytes(Account.create().key), max_bytes=4 << 20, config=P2PConfig(**config)
    )  # type: ignore[arg-type]


@pytest.fixture
async def swarm() -> AsyncIterator[dict[bytes, P2PService]]:
    """A relays (listens on 127.0.0.1), C has no listener and reserves on A, B listens nowhere either."""
    a = _svc(_Accept(None), listen=("/ip4/127.0.0.1/tcp/0",), relay=True)
    await a.start()
    c, b, x = _svc(_Accept(MODEL), relays=(a.addresses()[0],)), _svc(_Accept(None)), _svc(_Accept(None))
    sites = {A: a, B: b, C: c}
    members = {k: P2PPeer(s.account) for k, s in sites.items()}
    members[A] = P2PPeer(a.account, tuple(a.addresses()))
    for s in sites.values():
        s.set_peers(members)
    try:
        await c.start()
        await c.wait_reserved(10.0)
        await b.start()
        await x.start()
        assert c.host.addrs() == []  # no listening socket at all
        members[C] = P2PPeer(c.account, tuple(c.addresses()))
        for s in sites.values():
            s.set_peers(members)
        x.set_peers(members)  # the stranger knows the addresses; nobody lists it
        yield {**sites, X: x}
    finally:
        for s in (b, c, x, a):
            await s.close()


async def test_a_site_without_a_listener_takes_an_update_and_serves_a_model_through_the_relay(
    swarm: dict[bytes, P2PService],
) -> None:
    b, c = swarm[B], swarm[C]
    verdict = await b.send_update(C, round=1, term=1, state=STATE)
    assert verdict.ok, verdict
    assert c.handler.received == [codec.hash_hex(codec.content_hash(STATE))]  # type: ignore[attr-defined]
    got = await b.fetch_model(C, codec.hash_frames(*MODEL), max_bytes=4 << 20)
    assert all(torch.equal(got[k], STATE[k]) for k in STATE)
    assert b.paths[C].path == "relayed" and c.paths[B].path == "relayed"
    assert b.paths[C].bytes_out["relayed"] > 2_000_000 and b.paths[C].bytes_in["relayed"] == 2_000_012


async def test_bytes_that_do_not_hash_to_the_offer_and_oversized_offers_are_refused(
    swarm: dict[bytes, P2PService],
) -> None:
    b, c = swarm[B], swarm[C]
    verdict = await b.send_update(C, round=1, term=1, state=STATE, digest=b"\x01" * 32)
    assert (verdict.ok, verdict.reason) == (False, Refusal.HASH_MISMATCH)
    big = {"w": torch.zeros(1_100_000)}  # 4.4 MB > max_bytes: refused before a byte moves
    verdict = await b.send_update(C, round=1, term=1, state=big)
    assert (verdict.ok, verdict.reason) == (False, Refusal.TOO_LARGE)
    assert c.handler.received == []  # type: ignore[attr-defined]


async def test_a_non_member_that_reaches_the_relay_cannot_open_a_stream_to_a_site(
    swarm: dict[bytes, P2PService],
) -> None:
    a, c, x = swarm[A], swarm[C], swarm[X]
    with pytest.raises(TransportError):  # the relay closes its connection: no circuit, no stream
        await x.send_update(C, round=1, term=1, state=STATE)
    assert a.gate.denied >= 1
    # a relay that (wrongly) lists the stranger relays it; the site closes it out all the same
    a.set_peers({**a.peers, X: P2PPeer(x.account)})
    outcome: object
    try:
        outcome = await x.send_update(C, round=1, term=1, state=STATE)
    except TransportError as exc:
        outcome = exc
    assert not getattr(outcome, "ok", False)
    assert c.gate.denied >= 1 and x.account in c.gate.denied_accounts
    assert c.handler.received == []  # type: ignore[attr-defined]


async def test_a_relay_that_dies_mid_transfer_fails_the_transfer_and_the_next_goes_through_another() -> None:
    r1 = _svc(_Accept(None), listen=("/ip4/127.0.0.1/tcp/0",), relay=True)
    r2 = _svc(_Accept(None), listen=("/ip4/127.0.0.1/tcp/0",), relay=True)
    await r1.start()
    await r2.start()
    relays = (r1.addresses()[0], r2.addresses()[0])
    c, b = _svc(_Accept(None), relays=relays), _svc(_Accept(None))
    c.max_bytes = 64 << 20
    sites = {b"1" * 32: r1, b"2" * 32: r2, B: b, C: c}
    members = {k: P2PPeer(s.account, tuple(s.addresses())) for k, s in sites.items()}
    try:
        for s in sites.values():
            s.set_peers(members)
        await c.start()
        await b.start()
        while len(c.reserved()) < 2:
            await c.wait_reserved(10.0)
            await asyncio.sleep(0.05)
        members[C] = P2PPeer(c.account, tuple(c.addresses()))  # both circuits, r1's first
        b.set_peers(members)
        big = {"w": torch.randn(12_000_000)}  # 48 MB: long enough to kill the relay under it
        transfer = asyncio.ensure_future(b.send_update(C, round=1, term=1, state=big))
        while not b.paths.get(C) or not b.paths[C].bytes_out:
            await asyncio.sleep(0.01)
        await r1.close()  # the relay carrying the transfer dies
        try:
            outcome: object = await asyncio.wait_for(transfer, 60)
        except TransportError as exc:
            outcome = exc
        assert not getattr(outcome, "ok", False), outcome  # it failed, and said so: no hang
        verdict = await b.send_update(C, round=1, term=2, state=STATE)  # through r2 now
        assert verdict.ok, verdict
        assert c.reserved() == [relays[1]]
    finally:
        for s in (b, c, r2, r1):
            await s.close()
