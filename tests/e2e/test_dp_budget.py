"""Differential privacy with real daemons on a real chain: DP-SGD through Opacus at every site, each
commit carrying the site's cumulative epsilon, a budget that stops one site while the others go on,
and an accountant that neither loses nor double-counts a round across a SIGKILL and restart."""

from __future__ import annotations

import json
import signal

import pytest

from swarmd.ledger import RoundStatus
from swarmd.ops import wait_until
from swarmd.privacy.dp import Accountant, epsilon_for, milli_epsilon, plan_for
from swarmd.task import load_task

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]

ROUNDS = 3
BATCH = 8  # cxr_densenet's training batch size (configs/train.json); the epsilons below assume it
# sigma 1.5, q = 1 (8 samples) spends 4.4, 6.6, 8.4 after 1, 2, 3 rounds; q = 8/13 stays under 7 for 3.
PRIVACY = {
    "mechanism": "sample",
    "noise_multiplier": 1.5,
    "delta": 1e-5,
    "clip": 1.0,
    "epsilon_budget": 7.0,
}


def _n_train(site) -> int:
    return len(json.loads(site.data_list.read_text())["training"])


def test_a_spent_budget_stops_one_site_and_every_commit_carries_its_exact_epsilon(swarm_root, swarm_factory):
    with swarm_factory(
        swarm_root,
        rounds=ROUNDS,
        block_time=1,
        commit_window=8,  # all three must commit in rounds 0 and 1; a full round closes at once
        leader_timeout=10,
        privacy=PRIVACY,
        bundle="cxr_densenet",
        start=False,
    ) as swarm:
        small, restarted, steady = swarm.consortium.sites
        doc = json.loads(small.data_list.read_text())
        doc["training"] = doc["training"][:BATCH]  # every step sees all its data: it spends fastest
        small.data_list.write_text(json.dumps(doc))
        swarm.start()

        # SIGKILL a site right after its round-1 commit is on chain; it counts that round on restart.
        wait_until(
            lambda: (
                swarm.ledger.current_round() >= 1 and restarted.address in swarm.ledger.round(1).committers
            ),
            180,
            interval=0.1,
            what="round 1's commit",
        )
        victim = swarm.daemon(restarted.address)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        victim.start()
        swarm.wait_done(timeout=360)

        task = load_task(swarm.consortium.task)
        rounds = [swarm.ledger.round(r) for r in range(ROUNDS)]
        assert all(i.status == RoundStatus.FINALIZED for i in rounds)
        for site in swarm.consortium.sites:
            plan = plan_for(
                task.privacy,
                rounds=ROUNDS,
                local_steps=task.swarm.local_steps,
                n_samples=_n_train(site),
                batch_size=BATCH,
                n_sites=task.swarm.min_peers,
                secure_aggregation=False,
            )
            assert plan is not None
            mine = [(i.round, i.commit_of(site.address)) for i in rounds if site.address in i.committers]
            # the k-th commit carries exactly k rounds' epsilon: none lost, none counted twice
            for k, (_, commit) in enumerate(mine, start=1):
                assert commit.milli_epsilon == milli_epsilon(epsilon_for(plan, k)), (site.name, k)
            account = Accountant(plan, site.config.parent / "state" / "privacy" / "accountant.json")
            assert list(account.rounds) == [r for r, _ in mine], site.name
            status = swarm.daemon(site.address).status()
            assert status is not None
            assert status["epsilon"] == pytest.approx(account.epsilon)
            if site is small:
                # 2 rounds spend 6.6 of 7.0; a third would reach 8.4: it stopped, and kept serving models
                assert [r for r, _ in mine] == [0, 1] and status["budget_spent"]
                assert status["last_merged_round"] == ROUNDS - 1
            else:
                assert not status["budget_spent"] and account.epsilon <= PRIVACY["epsilon_budget"]
        assert small.address not in rounds[2].committers and steady.address in rounds[2].committers
