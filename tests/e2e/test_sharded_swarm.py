"""Three real daemons on anvil play a round with `[exchange] topology = "sharded"`: every commitment on
chain is the Merkle root of its update's leaves, and the finalized model is, bit for bit, what the
leader topology's fedavg makes of the same updates (each site's own committed update, read from its
store and folded in address order); `swarm ledger audit` recomputes it from the updates each committer
names for its root, and verifies it. The task cuts the model into 32 leaves, not the default 64."""

from __future__ import annotations

import json
import signal

import pytest

from swarmd.codec import content_hash
from swarmd.daemon.store import ModelStore
from swarmd.ledger import Outcome, RoundStatus
from swarmd.merge import FedAvg, Update
from swarmd.merge.shards import ShardLayout
from swarmd.ops import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]

LEAVES = 32  # not the default: every site, and the audit, must cut the model into the task's count
SHARDED = {"topology": "sharded", "leaves": LEAVES}


def own_update(site) -> dict:
    """A site's committed update of round 0, from its own store (the journal names it)."""
    state = site.config.parent / "state"
    journal = json.loads((state / "journal.json").read_text())
    h = bytes.fromhex(journal["rounds"]["0"]["update_hash"].removeprefix("0x"))
    return ModelStore(state / "checkpoints").get(h)


def test_a_sharded_round_finalizes_the_leader_topologys_fedavg_and_audits(
    swarm_root, swarm_factory, swarm_cli
):
    with swarm_factory(swarm_root, rounds=1, n_per_site=8, exchange=SHARDED) as swarm:
        swarm.wait_done(timeout=300)
        info = swarm.ledger.round(0)
        assert info.status == RoundStatus.FINALIZED
        assert list(info.outcomes) == [Outcome.INCLUDED] * 3
        commits = {c.site: c for c in info.commits}
        updates = {site.address: own_update(site) for site in swarm.consortium.sites}
        fedavg = FedAvg()
        fedavg.begin(next(iter(updates.values())))
        for address in sorted(updates, key=str.lower):  # the leader topology's fold order
            update = updates[address]
            assert commits[address].update_hash == ShardLayout(update, LEAVES).root(update)
            fedavg.add(Update(address, update, commits[address].n_samples))
        assert content_hash(fedavg.result()) == info.merged_hash
        hashes = {st["last_merged_hash"] for st in swarm.statuses()}
        assert hashes == {"0x" + info.merged_hash.hex()}
        leader = swarm.daemon(info.leader)
        assert "sharded over 3 owners" in leader.tail(400)
        # The audit asks each committer which update its root commits to, fetches it, checks the root.
        auditor = next(s for s in swarm.consortium.sites if s.address != info.leader)
        audited = swarm_cli("ledger", "audit", "--rounds", "all", "--config", str(auditor.config), "--json")
        assert audited.returncode == 0, audited.stdout + audited.stderr
        [verdict] = json.loads(audited.stdout)
        assert verdict["status"] == "verified" and verdict["included"] == 3
        sources = {a.lower(): where.lower() for a, where in verdict["sources"].items()}
        assert sources == {a.lower(): "local" if a == auditor.address else a.lower() for a in commits}


@pytest.mark.long
def test_a_shard_owner_killed_mid_round_is_reassigned_and_the_round_finalizes(swarm_root, swarm_factory):
    """SIGKILL a committer that is not the leader the moment the round is elected: the leader declares it
    dead, hands its leaves to the live owners (who fetch them from the committers), and finalizes the
    fedavg of the two live updates, the dead one NOT_DELIVERED."""
    # Blocks are mined per transaction: none comes between the election and the finalize, so neither the
    # exchange deadline nor a re-election can cut the 8 s the leader waits before it calls a site dead.
    with swarm_factory(swarm_root, rounds=1, n_per_site=8, exchange=SHARDED) as swarm:
        info = wait_until(lambda: _past_open(swarm.ledger, 0), 150, interval=0.05, what="round 0's election")
        assert info.status == RoundStatus.ELECTED
        victim = next(a for a in info.revealed if a != info.leader)
        swarm.daemon(victim).proc.send_signal(signal.SIGKILL)
        final = wait_until(
            lambda: (i := swarm.ledger.round(0)).status == RoundStatus.FINALIZED and i, 90, what="finalize"
        )
        outcomes = dict(zip((c.site for c in final.commits), final.outcomes, strict=True))
        assert outcomes.pop(victim) == Outcome.NOT_DELIVERED
        assert set(outcomes.values()) == {Outcome.INCLUDED} and final.term == 1
        live = [s for s in swarm.consortium.sites if s.address in outcomes]
        fedavg = FedAvg()
        updates = {site.address: own_update(site) for site in live}
        fedavg.begin(next(iter(updates.values())))
        samples = {c.site: c.n_samples for c in final.commits}
        for address in sorted(updates, key=str.lower):
            fedavg.add(Update(address, updates[address], samples[address]))
        assert content_hash(fedavg.result()) == final.merged_hash
        assert "sharded over 2 owners" in swarm.daemon(final.leader).tail(400)


def _past_open(ledger, r):
    if ledger.current_round() < r:
        return None
    info = ledger.round(r)
    return info if info.status != RoundStatus.OPEN else None
