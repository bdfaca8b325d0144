"""Failures the swarm must survive, with real daemons on a real chain with 1-second blocks:
a leader killed with SIGKILL mid-round, a daemon restarted mid-round, a chain outage, a late site.
Attacks by members and strangers are in tests/fault."""

from __future__ import annotations

import json
import signal
import time

import pytest

from swarmd.daemon.rounds import SEND_TIMEOUT
from swarmd.ledger import Devnet, RoundStatus
from swarmd.ops import wait_until

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
        # two blocks: a finalize already in flight would be mined by now (counted, not slept: anvil on a
        # loaded box can fall behind its 1 s block time)
        two_on = swarm.ledger.block_number() + 2
        wait_until(lambda n=two_on: swarm.ledger.block_number() >= n, 60, 0.2, what="two blocks")
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
    # Six rounds: a restarted daemon needs 10-30 s to start on a loaded box, and the swarm does not wait
    # for it, so enough rounds must remain after the failover for it to be seen rejoining.
    with swarm_factory(swarm_root, rounds=6, block_time=1, commit_window=4, leader_timeout=8) as swarm:
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
        final = swarm.ledger.round(5)
        assert final.status == RoundStatus.FINALIZED
        hashes = {st["last_merged_hash"] for st in swarm.statuses()}
        assert hashes == {"0x" + final.merged_hash.hex()}
        rounds_after_restart = [swarm.ledger.round(k) for k in range(r + 1, 6)]
        assert any(dead in {c.site for c in i.commits} for i in rounds_after_restart), (
            "restarted site never rejoined"
        )


@pytest.mark.long
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
            # the websocket for new heads (chain.ws_url) is reconnected too, with backoff
            pushed = lambda: {st["chain_heads"] for st in swarm.statuses()} == {"pushed"}  # noqa: E731
            wait_until(pushed, 60, what="every daemon to follow the new heads again")
        assert all(d.alive() for d in swarm.daemons)  # nobody crashed during the outage
        assert any(not st["chain_ok"] for st in outage), "no daemon noticed the chain was gone"
        assert any(st["chain_heads"] == "lost" for st in outage), "no daemon saw its head socket drop"


def test_late_site_catches_up_from_peers_and_joins_the_next_round(swarm_root, swarm_factory):
    """site-c's daemon starts only after round 0 is finalized: it pulls M_0 from a holder (verified
    against the chain), takes part in the following rounds, and ends on the same model."""
    with swarm_factory(swarm_root, rounds=5, block_time=1, commit_window=6, start=False) as swarm:
        early, late = swarm.daemons[:2], swarm.daemons[2]
        for d in early:
            d.start()
        wait_until(lambda: swarm.ledger.current_round() >= 1, 120, what="round 0 without site-c")
        late_address = swarm.consortium.sites[2].address
        assert late_address not in {c.site for c in swarm.ledger.round(0).commits}
        late.start()
        swarm.wait_done(timeout=240)
        # five rounds: the late site's start takes 10-30 s on a loaded box, and the swarm does not wait
        joined = [r for r in (1, 2, 3, 4) if late_address in swarm.ledger.round(r).included]
        assert joined, "the late site never contributed"
        final = swarm.ledger.round(4)
        statuses = swarm.statuses()
        assert {st["last_merged_hash"] for st in statuses} == {"0x" + final.merged_hash.hex()}
        assert {st["chain_heads"] for st in statuses} == {"pushed"}  # anvil's websocket (chain.ws_url)


def _received(journal_path, r: int) -> dict:
    try:
        return json.loads(journal_path.read_text())["rounds"][str(r)].get("received", {})
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.long
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
        # The restarted leader took the stored update back from disk, once (logs name peers by site).
        peer = swarm.daemon(restored)
        since_restart = leader.tail(400).split("swarmd up:")[-1]
        assert since_restart.count(f"round {r}: accepted update from {peer.name} (") == 1
        # The peer was told once that its update is held: either the ack came before the kill, or
        # the kill cut it off and the peer's resend was refused (before any byte moved) as held.
        held = [
            ln
            for ln in peer.tail(400).splitlines()
            if f"round {r}: leader" in ln and ("accepted our" in ln or "already holds our" in ln)
        ]
        assert len(held) == 1, held
        swarm.wait_done(timeout=180)
