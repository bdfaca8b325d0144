"""Attacks that need only a member's key, against real daemons on a real chain with 1-second blocks.
The attacker is a provisioned member driven from this test process with its own `Node` and ledger
client, a modified client at that: it offers its update and never sends a chunk.

One swarm, one round, both attacks:
- a committer offers an update for another hash than its commitment (refused before any byte moves),
  then keeps two offers of its committed update open at the leader and sends nothing: the leader
  drops each stalled stream after a stall timeout derived from its exchange deadline, and every
  honest committer is included in the round;
- the consortium admin removes that member: within a chain poll or two its pings and model fetches
  go unanswered, although the daemons have no round left to play (they refreshed their member list
  only at round start before);
- a stranger with a fresh CURVE key is refused at the leader's handshake.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
import torch
import zmq
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families

from swarmd.codec import content_hash
from swarmd.config import load_config
from swarmd.daemon.site import site_identity
from swarmd.errors import PeerRejected, TransportError
from swarmd.identity import SiteIdentity
from swarmd.ledger import Ledger, RoundInfo, RoundStatus
from swarmd.ledger.receipt import election_seal
from swarmd.ops import wait_until
from swarmd.transport import FetchOnly, Node, Refusal, Verdict

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


async def _never_send(*args: object) -> None:
    """The attacker's pump: takes the grant, sends no chunk."""
    await asyncio.Event().wait()


def _member_node(ident: SiteIdentity) -> Node:
    """A node with the attacker's member key, outside any daemon."""
    return Node(
        FetchOnly("not a leader"),
        bind="tcp://127.0.0.1:*",
        public_key=ident.curve.public,
        secret_key=ident.curve.secret,
        max_bytes=1 << 30,
    )


def _attacked_term(ledger: Ledger, attacker: str) -> RoundInfo:
    """Round 0 once a site other than the attacker leads it (after a re-election if the draw fell on
    the attacker, which never finalizes)."""
    return wait_until(
        lambda: (i := ledger.round(0)).status == RoundStatus.ELECTED and i.leader != attacker and i,
        120,
        0.05,
        "round 0 led by an honest site",
    )


def _rejections(bind: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{bind}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "swarmd_rejections_total"
    }


def test_a_stalling_committer_costs_honest_sites_nothing_and_a_removed_member_is_cut_off(
    swarm_root, swarm_factory
):
    # leader_timeout 15: the exchange deadline is 10 blocks after the election
    with swarm_factory(
        swarm_root, sites=4, rounds=1, block_time=1, commit_window=30, leader_timeout=15, start=False
    ) as swarm:
        site = swarm.consortium.sites[3]
        for d in swarm.daemons[:3]:
            d.start()
        cfg = load_config(site.config)
        ident = site_identity(cfg)
        ledger = Ledger(cfg.chain.rpc_url, cfg.chain.contract, ident.account)
        # No byte of it ever moves: any state will do, a small one keeps the offers cheap to make.
        update, forged = {"w": torch.zeros(4)}, {"w": torch.ones(4)}
        # Commit last, so that the round is elected as soon as everyone committed.
        wait_until(lambda: len(swarm.ledger.round(0).commits) == 3, 120, 0.2, "the honest commits")
        secret = b"\x5a" * 32
        ledger.commit(0, content_hash(update), 16, seal=election_seal(secret, str(ledger.sender), 0))
        wait_until(lambda: ledger.can_reveal(0), 60, 0.1, "the reveal window")
        ledger.reveal(0, secret)  # a committer that reveals may be drawn, so the attacker reveals too
        members = {m.account: m for m in ledger.active_members()}
        info = _attacked_term(swarm.ledger, site.address)
        leader = members[info.leader]

        async def offer(node: Node, state, verdicts: list[tuple[Verdict, float]]) -> None:
            """Offer until the term is over; keep what the leader answered and after how long."""
            while (now := await asyncio.to_thread(ledger.round, 0)).status == RoundStatus.ELECTED and (
                now.term == info.term
            ):
                t0 = time.monotonic()
                try:
                    verdict = await node.send_update(
                        leader.curve_key, round=0, term=info.term, state=state, timeout=60
                    )
                except (PeerRejected, TransportError):
                    await asyncio.sleep(0.2)
                    continue
                verdicts.append((verdict, time.monotonic() - t0))
                if verdict.reason == Refusal.NOT_READY:
                    await asyncio.sleep(0.05)
                elif verdict.reason != Refusal.STALLED:
                    return

        async def attack() -> tuple[list, list, list]:
            async with _member_node(ident) as node:
                node.set_peers(
                    {m.curve_key: m.endpoint for m in members.values() if m.account != site.address}
                )
                node._flows.pump = _never_send  # type: ignore[method-assign]
                wrong: list[tuple[Verdict, float]] = []
                stalls: list[list[tuple[Verdict, float]]] = [[], []]
                # The stalling offers first, to be ahead of the honest ones in the leader's queue.
                offers = [asyncio.ensure_future(offer(node, update, s)) for s in stalls]
                await offer(node, forged, wrong)  # returns at the first refusal other than not_ready
                # an offer still queued at the leader when the round ends is no longer of interest
                await asyncio.to_thread(
                    wait_until,
                    lambda: swarm.ledger.round(0).status != RoundStatus.ELECTED,
                    60,
                    0.2,
                    "finalize",
                )
                for o in offers:
                    o.cancel()
                await asyncio.gather(*offers, return_exceptions=True)
                return wrong, stalls[0], stalls[1]

        wrong, *stalls = asyncio.run(attack())
        final = wait_until(
            lambda: (i := swarm.ledger.round(0)).status == RoundStatus.FINALIZED and i,
            60,
            what="round 0 to finalize",
        )
        committers = {c.site for c in final.commits}
        print(
            f"attacked term {info.term}; stalled offers dropped after",
            [round(t, 2) for s in stalls for v, t in s if v.reason == Refusal.STALLED],
        )
        # admission before bytes: another hash than the commitment never reaches the slot
        assert wrong[-1][0].reason == Refusal.WRONG_DIGEST
        # the stalled streams were dropped, and every honest committer is in the round
        assert any(v.reason == Refusal.STALLED for s in stalls for v, _ in s)
        assert site.address in committers and site.address not in final.included
        assert set(final.included) == committers - {site.address} and len(final.included) == 3
        leader_cfg = load_config(next(s for s in swarm.consortium.sites if s.address == info.leader).config)
        counted = wait_until(
            lambda: (c := _rejections(leader_cfg.metrics.bind)).get("stalled") and c, 30, what="metrics"
        )
        assert counted.get("wrong_digest", 0) >= 1

        # --- the admin removes the attacker: it gets no answers and no model from then on ---------
        admin = Ledger(cfg.chain.rpc_url, cfg.chain.contract, Account.from_key(swarm.devnet.dev_keys[0]))

        async def cut_off() -> float:
            async with _member_node(ident) as node:
                node.set_peers({leader.curve_key: leader.endpoint})
                await node.ping(leader.curve_key, timeout=5)
                got = await node.fetch_model(leader.curve_key, final.merged_hash, max_bytes=1 << 30)
                assert content_hash(got) == final.merged_hash  # served while a member
                await asyncio.to_thread(admin.remove, site.address)
                removed = time.monotonic()
                while time.monotonic() - removed < 60:  # the leader reads the chain, on a loaded box
                    try:
                        await node.ping(leader.curve_key, timeout=0.5)
                    except (PeerRejected, TransportError):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("a removed member kept getting answers for 60 s")
                took = time.monotonic() - removed
                with pytest.raises((PeerRejected, TransportError)):
                    await node.fetch_model(leader.curve_key, final.merged_hash, max_bytes=1 << 30, timeout=2)
                return took

        took = asyncio.run(cut_off())
        print(f"removed member cut off {took:.2f}s after its removal was mined")

        # --- a stranger with a fresh CURVE key is refused at the handshake -------------------------
        async def stranger() -> None:
            pub, sec = zmq.curve_keypair()
            async with Node(
                FetchOnly("not a leader"),
                bind="tcp://127.0.0.1:*",
                public_key=pub,
                secret_key=sec,
                max_bytes=1 << 30,
            ) as node:
                node.set_peers({leader.curve_key: leader.endpoint})
                with pytest.raises((PeerRejected, TransportError)):
                    await node.send_update(leader.curve_key, round=0, term=info.term, state=update, timeout=5)

        asyncio.run(stranger())
        assert all(d.alive() for d in swarm.daemons[:3])
