"""Delivery receipts with real daemons on a real chain: a leader that accepts an update and then leaves
it out of the merge (the DROP_UPDATE test fault, switched on for every site, so whoever is elected drops
its first peer by address) still handed the dropped committer a receipt, signed with its account key
for that round and term, over exactly the hash the committer put on chain; the committer it merged holds
one too. The dropped committer then runs `swarm ledger dispute 0` (the real CLI, with its site
config): the chain records one dispute against that leader, a second is refused as already disputed,
and the included committer's is refused as included. (Honest rounds' receipts are checked in
test_swarm.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from swarmd.daemon.receipts import ReceiptBook
from swarmd.ledger import RoundStatus
from swarmd.ledger.receipt import receipt_signer

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def _dispute(swarm_cli: Callable[..., subprocess.CompletedProcess[str]], config: Path, code: int) -> str:
    res = swarm_cli("ledger", "dispute", "0", "--config", str(config))
    out = res.stdout + res.stderr
    assert res.returncode == code, out
    assert "Traceback" not in out
    return out


def test_a_leader_that_drops_a_delivered_update_is_disputed_with_its_own_receipt(
    swarm_root, swarm_factory, swarm_cli, monkeypatch
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

        # The dropped committer disputes the round with the receipt it kept.
        config = {s.address: s.config for s in swarm.consortium.sites}
        names = {s.address: s.name for s in swarm.consortium.sites}
        assert swarm.ledger.disputes_against(info.leader) == 0  # type: ignore[arg-type]
        out = _dispute(swarm_cli, config[victim], 0)
        assert f"disputed: {names[victim]}" in out and f"against leader {names[info.leader]}" in out  # type: ignore[index]
        assert swarm.ledger.disputes_against(info.leader) == 1  # type: ignore[arg-type]
        [recorded] = swarm.ledger.disputes(info.finalized_block or 0)
        assert (recorded.round, recorded.site, recorded.leader) == (0, victim, info.leader)
        assert "RoundAlreadyDisputed" in _dispute(swarm_cli, config[victim], 26)
        assert "NothingToDispute" in _dispute(swarm_cli, config[peers[1]], 23)
        assert swarm.ledger.disputes_against(info.leader) == 1  # type: ignore[arg-type]
