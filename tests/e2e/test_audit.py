"""`swarm ledger audit` against real daemons: a leader that finalizes a model that is not the merge of
the included updates (test fault FORGE_MERGE, on every site, so every round is forged whoever leads)
is caught round by round; the honest run is audited in test_swarm.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from swarmd.audit import AuditExit
from swarmd.daemon.faults import ENV, GUARD
from swarmd.ledger import RoundStatus

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_audit_flags_every_round_a_forging_leader_finalized(
    swarm_root, swarm_factory, swarm_cli, monkeypatch
):
    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return swarm_cli("ledger", "audit", *args)

    monkeypatch.setenv(ENV, "forge-merge")  # the launcher passes the environment to the daemons
    monkeypatch.setenv(GUARD, "1")
    with swarm_factory(swarm_root, rounds=2) as swarm:
        swarm.wait_done(timeout=240)
        assert [i.status for i in swarm.ledger.rounds()[:2]] == [RoundStatus.FINALIZED] * 2
        # audit from a site that led neither round: a leader holds every update it merged, so an auditor
        # that led both would fetch nothing, and the fetch from owners and leaders would go untested
        leaders = {str(i.leader).lower() for i in swarm.ledger.rounds()[:2]}
        site = next(s for s in swarm.consortium.sites if s.address.lower() not in leaders)
        config = str(site.config)
        found = audit("--rounds", "all", "--config", config, "--json")
        assert found.returncode == AuditExit.MISMATCH, found.stdout + found.stderr
        verdicts = json.loads(found.stdout)
        why = [(v["round"], v["status"], v["reason"]) for v in verdicts]
        assert [(v["round"], v["status"]) for v in verdicts] == [(0, "MISMATCH"), (1, "MISMATCH")], why
        for v in verdicts:  # every included update was fetched and matched its commitment
            assert v["recomputed"] != v["finalized"] and len(v["sources"]) == v["included"] >= 2
        # the site fetched the others' updates from their owners or the leader, not only its own
        assert {s for v in verdicts for s in v["sources"].values()} - {"local"}
        # published: a failed attestation per forged round, which `swarm model export` warns about
        attested = audit("--rounds", "all", "--attest", "--config", config)
        assert "attested on chain: rounds 0, 1" in attested.stdout, attested.stdout + attested.stderr
        got = [(a.round, a.auditor, a.ok) for a in swarm.ledger.attestations()]
        assert got == [(0, site.address, False), (1, site.address, False)]
        out = str(swarm_root / "export")
        exported = swarm_cli("model", "export", "--round", "1", "--config", config, "--out", out)
        assert exported.returncode == 0 and "failed attestation" in exported.stderr, exported.stderr
        one = audit("1", "--config", config)
        assert one.returncode == AuditExit.MISMATCH and "round 1: MISMATCH" in one.stdout, one.stdout
        assert "finalized 0x" in one.stdout and "recomputed 0x" in one.stdout
        unknown = audit("9", "--config", config)
        assert unknown.returncode == 2 and "UnknownRound" in unknown.stderr, unknown.stderr
        open_round = audit("2", "--config", config)  # the chain opened round 2; nobody commits to it
        assert open_round.returncode == 2 and "UnfinalizedRound" in open_round.stderr, open_round.stderr
