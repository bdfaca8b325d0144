"""Five real daemons merge with Krum (f = 1, so n >= 2f + 3 = 5): the chain finalizes the selected update
Included and the other four RejectedByRule, the leader's journal keeps the rule's verdicts, and
`swarm ledger audit` recomputes the round, fetching the rejected updates too."""

from __future__ import annotations

import json

import pytest

from swarmd.ledger import Outcome, RoundStatus

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_a_krum_round_finalizes_the_unselected_as_rejected_by_rule_and_audits(
    swarm_root, swarm_factory, swarm_cli
):
    krum = {"merge": "krum", "min_peers": 5, "krum_f": 1, "krum_m": 1}
    with swarm_factory(swarm_root, sites=5, rounds=1, n_per_site=8, swarm_settings=krum) as swarm:
        swarm.wait_done(timeout=240)
        (info,) = [i for i in swarm.ledger.rounds() if i.status == RoundStatus.FINALIZED]
        assert len(info.commits) == 5 and len(info.included) == 1
        assert sorted(info.outcomes) == [Outcome.INCLUDED] + [Outcome.REJECTED_BY_RULE] * 4
        leader = next(s for s in swarm.consortium.sites if s.address == info.leader)
        journal = json.loads((leader.config.parent / "state" / "journal.json").read_text())
        verdicts = journal["rounds"]["0"]["rule_verdicts"]
        assert len(verdicts) == 5 and sum(1 for v in verdicts.values() if v.get("rejected")) == 4
        config = str(swarm.consortium.sites[0].config)
        audited = swarm_cli("ledger", "audit", "--rounds", "all", "--config", config)
        assert audited.returncode == 0 and ": verified" in audited.stdout, audited.stdout + audited.stderr
