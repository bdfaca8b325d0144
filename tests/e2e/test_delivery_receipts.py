"""Delivery receipts with real daemons on a real chain: a leader that accepts an update and then leaves
it out of the merge (the DROP_UPDATE test fault, switched on for every site, so whoever is elected drops
its first peer by address) still handed the dropped committer a receipt, signed with its account key
for that round and term, over exactly the hash the committer put on chain; the committer it merged holds
one too. (Honest rounds' receipts are checked in test_swarm.py.)"""

from __future__ import annotations

import pytest

from swarmd.daemon.receipts import ReceiptBook
from swarmd.ledger import RoundStatus
from swarmd.ledger.receipt import receipt_signer

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_a_leader_that_drops_a_delivered_update_gave_its_committer_a_receipt(
    swarm_root, swarm_factory, monkeypatch
) -> None:
    monkeypatch.setenv("SWARMD_TESTING", "1")
    monkeypatch.setenv("SWARMD_TEST_FAULTS", "drop-update")  # daemons inherit it, and PYTEST_CURRENT_TEST
    with swarm_factory(swarm_root, rounds=1) as swarm:
        swarm.wait_done(timeout=240)
        info = swarm.ledger.round(0)
        assert info.status == RoundStatus.FINALIZED
        chain_id, contract = swarm.ledger.chain_id(), swarm.consortium.contract
        peers = sorted((c.site for c in info.commits if c.site != info.leader), key=str.lower)
        victim = peers[0]
        assert victim not in info.included and info.leader in info.included
        for site in peers:
            book = ReceiptBook(next(s.journal.parent for s in swarm.consortium.sites if s.address == site))
            kept = book.get(0)
            assert kept is not None, f"{site} holds no receipt"
            receipt, signature = kept
            assert (receipt.round, receipt.term, receipt.site) == (0, info.term, site)
            assert receipt.update_hash == info.commit_of(site).update_hash  # type: ignore[union-attr]
            assert receipt_signer(contract, chain_id, receipt, signature) == info.leader
            assert (site in info.included) == (site != victim)
        leader_log = swarm.daemon(info.leader).tail(400)
        assert "test fault: dropping the update" in leader_log
