"""Failures the swarm must survive, with real daemons on a real chain with 1-second blocks:
a leader killed with SIGKILL mid-round, a daemon restarted mid-round, a member sending an update
that differs from its on-chain commitment, and a non-member trying to deliver one."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
import zmq

from swarmd.codec import content_hash
from swarmd.config import load_config
from swarmd.daemon.rounds import SEND_TIMEOUT
from swarmd.daemon.site import site_identity
from swarmd.errors import PeerRejected, TransportError
from swarmd.ledger import Devnet, Ledger, RoundStatus
from swarmd.ops import wait_until
from swarmd.task import load_task
from swarmd.train import initial_weights
from swarmd.transport import Node, Refusal, Verdict

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def _freeze_leader_of_an_open_exchange(swarm, rounds: range) -> tuple[int, str]:
    """SIGSTOP the leader the moment a round is elected; keep it only if it had not finalized yet."""
    for r in rounds:
        info = wait_until(
            lambda r=r: _past_open(swarm.ledger, r), 120, interval=0.05, what=f"round {r} election"
        )
        if info.status != RoundStatus.ELECTED:
            continue
        leader = swarm.daemon(info.leader)
        leader.proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # two blocks: a finalize already in flight would be mined by now
        if swarm.ledger.round(r).status == RoundStatus.ELECTED:
            return r, info.leader
        leader.proc.send_signal(signal.SIGCONT)
    raise AssertionError("never caught a leader before it finalized")


def _past_open(ledger, r):
    """The round once it has left OPEN (elected, finalized or abandoned), else None."""
    if ledger.current_round() < r:
        return None
    info = ledger.round(r)
    return info if info.status != RoundStatus.OPEN else None


def test_leader_killed_mid_exchange_round_finalizes_with_new_leader_and_site_resumes(
    swarm_root, swarm_factory
):
    # Four rounds: a restarted daemon needs a few seconds to start, and the swarm does not wait for it,
    # so at least two rounds must remain after the failover for it to be seen rejoining.
    with swarm_factory(swarm_root, rounds=4, block_time=1, commit_window=4, leader_timeout=8) as swarm:
        r, dead = _freeze_leader_of_an_open_exchange(swarm, range(0, 2))
        victim = swarm.daemon(dead)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        info = wait_until(
            lambda: (i := swarm.ledger.round(r)).status == RoundStatus.FINALIZED and i,
            90,
            what=f"round {r} to finalize after the leader died",
        )
        assert dead in info.failed_leaders and info.leader != dead and info.term >= 2
        # every live committer resent its update to the new leader and was merged
        assert set(info.included) == {c.site for c in info.commits} - {dead}
        # the killed site restarts mid-swarm, catches up from its journal and its peers, and finishes
        victim.start()
        swarm.wait_done(timeout=240)
        final = swarm.ledger.round(3)
        assert final.status == RoundStatus.FINALIZED
        hashes = {st["last_merged_hash"] for st in swarm.statuses()}
        assert hashes == {"0x" + final.merged_hash.hex()}
        rounds_after_restart = [swarm.ledger.round(k) for k in range(r + 1, 4)]
        assert any(dead in {c.site for c in i.commits} for i in rounds_after_restart), (
            "restarted site never rejoined"
        )


class _Quiet:
    def check_offer(self, peer, header) -> Verdict:
        return Verdict(False, Refusal.NOT_READY, "not a leader")

    async def on_update(self, peer, header, state, digest) -> Verdict:
        return Verdict(False, Refusal.NOT_READY, "not a leader")

    async def on_announce(self, peer, header) -> None:
        return None

    def serve_model(self, model_hash):
        return None


def test_forged_update_is_excluded_and_non_member_is_refused(swarm_root, swarm_factory):
    # leader_timeout 12: the leader waits up to 8 blocks for the forger's update, time enough for
    # this test process to see the election and stream it on a loaded 2-core box.
    with swarm_factory(
        swarm_root, sites=4, rounds=1, block_time=1, commit_window=30, leader_timeout=12, start=False
    ) as swarm:
        forger_site = swarm.consortium.sites[3]
        for d in swarm.daemons[:3]:
            d.start()
        cfg = load_config(forger_site.config)
        ident = site_identity(cfg)
        ledger = Ledger(cfg.chain.rpc_url, cfg.chain.contract, ident.account)
        base = initial_weights(load_task(cfg.site.task))
        honest = {k: v.clone() for k, v in base.items()}
        forged = {k: v + 0.5 if v.is_floating_point() else v for k, v in base.items()}
        # Commit last: committing first would start the commit window before the daemons are up.
        wait_until(lambda: len(swarm.ledger.round(0).commits) == 3, 120, 0.2, "the honest commits")
        ledger.commit(0, content_hash(honest), 16)

        async def play() -> tuple[Verdict, Exception]:
            info = await asyncio.to_thread(
                wait_until,
                lambda: (i := ledger.round(0)).status != RoundStatus.OPEN and i,
                120,
                0.2,
                "election",
            )
            members = {m.account: m for m in ledger.active_members()}
            async with Node(
                _Quiet(),
                bind="tcp://127.0.0.1:*",
                public_key=ident.curve.public,
                secret_key=ident.curve.secret,
                max_bytes=1 << 30,
            ) as node:
                node.set_peers(
                    {m.curve_key: m.endpoint for m in members.values() if m.account != ident.address}
                )
                target = (
                    members[info.leader]
                    if info.leader != ident.address
                    else next(m for a, m in members.items() if a != ident.address)
                )
                verdict: Verdict | None = None  # None: the forger was the leader itself
                if info.leader != ident.address:
                    verdict = await _send_until_ready(node, target.curve_key, 0, info.term, forged)
            # a stranger with a fresh CURVE key is refused at the handshake
            pub, sec = zmq.curve_keypair()
            async with Node(
                _Quiet(), bind="tcp://127.0.0.1:*", public_key=pub, secret_key=sec, max_bytes=1 << 30
            ) as stranger:
                stranger.set_peers({target.curve_key: target.endpoint})
                try:
                    await stranger.send_update(target.curve_key, round=0, term=info.term, state=honest)
                except (PeerRejected, TransportError) as exc:
                    return verdict, exc
            raise AssertionError("a non-member delivered an update")

        verdict, refusal = asyncio.run(play())
        assert isinstance(refusal, PeerRejected | TransportError)
        info = wait_until(
            lambda: (i := swarm.ledger.round(0)).status == RoundStatus.FINALIZED and i,
            120,
            what="round 0 to finalize",
        )
        assert forger_site.address not in info.included
        assert len(info.included) == 3
        if verdict is not None:
            # the digest the forger offered is not its commitment on chain: refused before any byte
            assert not verdict.ok and verdict.reason == Refusal.WRONG_DIGEST


async def _send_until_ready(node, peer, r, term, state) -> Verdict:
    for _ in range(60):
        verdict = await node.send_update(peer, round=r, term=term, state=state)
        if verdict.reason != Refusal.NOT_READY:
            return verdict
        await asyncio.sleep(0.5)
    raise AssertionError("the leader never opened its exchange")


def test_chain_outage_daemons_retry_and_catch_up(swarm_root, swarm_factory):
    """anvil stops (dumping its state) and comes back on the same port with that state; the
    daemons keep retrying with backoff meanwhile, then finish every round."""
    state = swarm_root / "chain-state.json"
    with swarm_factory(swarm_root, rounds=2, block_time=1, chain_state=state) as swarm:
        wait_until(lambda: swarm.ledger.current_round() >= 1, 120, what="round 0 to finalize")
        port = int(swarm.devnet.rpc_url.rsplit(":", 1)[1])
        swarm.devnet.stop()
        outage = []
        for _ in range(20):  # ten seconds without a chain; the daemons keep answering their control sockets
            outage += [st for st in swarm.statuses() if st is not None]
            time.sleep(0.5)
        with Devnet.start(port=port, block_time=1, accounts=8, state_file=state):
            swarm.wait_done(timeout=240)
            final = swarm.ledger.round(1)
            assert final.status == RoundStatus.FINALIZED
            assert {st["last_merged_hash"] for st in swarm.statuses()} == {"0x" + final.merged_hash.hex()}
        assert all(d.alive() for d in swarm.daemons)  # nobody crashed during the outage
        assert any(not st["chain_ok"] for st in outage), "no daemon noticed the chain was gone"


def test_late_site_catches_up_from_peers_and_joins_the_next_round(swarm_root, swarm_factory):
    """site-c's daemon starts only after round 0 is finalized: it pulls M_0 from a holder (verified
    against the chain), takes part in the following rounds, and ends on the same model."""
    with swarm_factory(swarm_root, rounds=4, block_time=1, commit_window=6, start=False) as swarm:
        early, late = swarm.daemons[:2], swarm.daemons[2]
        for d in early:
            d.start()
        wait_until(lambda: swarm.ledger.current_round() >= 1, 120, what="round 0 without site-c")
        late_address = swarm.consortium.sites[2].address
        assert late_address not in {c.site for c in swarm.ledger.round(0).commits}
        late.start()
        swarm.wait_done(timeout=240)
        joined = [r for r in (1, 2, 3) if late_address in swarm.ledger.round(r).included]
        assert joined, "the late site never contributed"
        final = swarm.ledger.round(3)
        assert {st["last_merged_hash"] for st in swarm.statuses()} == {"0x" + final.merged_hash.hex()}


def _received(journal_path, r: int) -> dict:
    try:
        return json.loads(journal_path.read_text())["rounds"][str(r)].get("received", {})
    except (OSError, ValueError, KeyError):
        return {}


def test_leader_killed_after_accepting_an_update_resumes_it_from_disk(swarm_root, swarm_factory):
    """kill -9 the leader as soon as it has stored a peer's update; restarted before its timeout, it
    folds the stored update in again and finalizes, without needing that peer's bytes again.

    It stays down longer than a sender waits for an answer, so offers their senders already gave
    up on reach the restarted leader first: their grants must be cancelled, not hold its slot."""
    with swarm_factory(swarm_root, rounds=2, block_time=1, leader_timeout=80) as swarm:
        for r in range(2):
            info = wait_until(lambda r=r: _past_open(swarm.ledger, r), 120, interval=0.05, what=f"round {r}")
            leader = swarm.daemon(info.leader)
            journal = leader.config.parent / "state" / "journal.json"
            acked = wait_until(
                lambda r=r, j=journal: _received(j, r), 60, interval=0.01, what="a stored update"
            )
            leader.kill()
            if swarm.ledger.round(r).status == RoundStatus.ELECTED:
                time.sleep(SEND_TIMEOUT + 1)
                leader.start()
                break
            leader.start()
        else:
            pytest.skip("the leader finalized before it could be killed in every round")
        final = wait_until(
            lambda: (i := swarm.ledger.round(r)).status == RoundStatus.FINALIZED and i,
            120,
            what=f"round {r} to finalize",
        )
        assert final.leader == info.leader and final.term == 1  # the same leader, no re-election
        restored = next(iter(acked))
        assert restored in final.included and len(final.included) == 3
        # The restarted leader folded the stored update in from disk, once.
        since_restart = leader.tail(400).split("swarmd up:")[-1]
        assert since_restart.count(f"round {r}: merged update from {restored}") == 1
        # The peer was told once that its update is held: either the ack came before the kill, or
        # the kill cut it off and the peer's resend was refused (before any byte moved) as held.
        peer = swarm.daemon(restored)
        held = [
            ln
            for ln in peer.tail(400).splitlines()
            if f"round {r}: leader" in ln and ("accepted our" in ln or "already holds our" in ln)
        ]
        assert len(held) == 1, held
        swarm.wait_done(timeout=180)
