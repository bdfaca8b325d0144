"""Three real daemons train the BatchNorm bundle with merged statistics (`batchnorm_stats = "merged"`):
each round every site trains on the round model's statistics and sends statistics re-estimated over its
own batches, so the merged model's BatchNorm counters restart every round (under the bundle's own batch
statistics they would count on: 2 steps a round), and `swarm ledger audit` verifies every round."""

from __future__ import annotations

import pytest

from swarmd.checkpoint import CheckpointStore
from swarmd.ledger import RoundStatus

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_a_swarm_on_merged_batchnorm_statistics_finalizes_and_audits(swarm_root, swarm_factory, swarm_cli):
    with swarm_factory(
        swarm_root,
        sites=3,
        rounds=2,
        n_per_site=8,
        bundle="cxr_small_bn",
        swarm_settings={"batchnorm_stats": "merged"},
    ) as swarm:
        swarm.wait_done(timeout=240)
        final = [i for i in swarm.ledger.rounds() if i.status == RoundStatus.FINALIZED]
        assert len(final) == 2
        site = swarm.consortium.sites[0]
        store = CheckpointStore(site.config.parent / "state" / "checkpoints")
        first, last = (store.get(i.merged_hash) for i in final)
        counters = [k for k in last if k.endswith("num_batches_tracked")]
        # Re-estimated over at most local_steps (2) batches every round: never 2 steps a round on top.
        assert counters and all(1 <= int(last[k]) <= 2 and int(first[k]) <= 2 for k in counters)
        means = [k for k in last if k.endswith("running_mean")]
        assert any(not bool((first[k] == last[k]).all()) for k in means)  # round 2 re-estimated them anew
        audited = swarm_cli("ledger", "audit", "--rounds", "all", "--config", str(site.config))
        out = audited.stdout + audited.stderr
        assert audited.returncode == 0 and out.count(": verified") == 2, out
