"""A 1-D task end to end: three real daemons on a real anvil train the `ecg_densenet` example (ECG-like
records as .npy files, one output, BCEWithLogitsLoss, ROC AUC) on generated signal data, the way
`swarm devnet run` would, and every site reports the merged model's AUC each round."""

from __future__ import annotations

import math

import pytest

from swarmd.daemon.store import Journal
from swarmd.ledger import RoundStatus
from swarmd.ops.local import DemoData, local_swarm, task_file
from swarmd.train import BUNDLES_DIR

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_three_sites_train_the_1d_bce_task_and_each_reports_its_auc(swarm_root):
    task = task_file(
        swarm_root / "swarm.toml",
        name="e2e-ecg",
        bundle=BUNDLES_DIR / "ecg_densenet",
        seed=5,
        swarm={"rounds": 2, "local_steps": 5, "min_peers": 2, "commit_window": 6, "fanout": 2},
    )
    data = DemoData(alpha=1.0, seed=4, n_per_site=16, n_test=16, task="signal")
    with local_swarm(swarm_root, task, sites=3, data=data) as swarm:
        try:
            swarm.wait_done(timeout=120)
        except BaseException:
            print(swarm.tails(80))
            raise
        rounds = swarm.ledger.rounds()
        assert [(i.round, i.status) for i in rounds[:2]] == [(r, RoundStatus.FINALIZED) for r in (0, 1)]
        assert all(len(i.included) >= 2 for i in rounds[:2])
        for site, st in zip(swarm.consortium.sites, swarm.statuses(), strict=True):
            assert st is not None and st["phase"] == "done" and st["last_merged_round"] == 1
            assert st["n_samples"] > 0  # the .npy records passed validation: none was refused
            journal = Journal.read(site.config.parent / "state" / "journal.json")
            aucs = [value for _, value in journal.metric_series()["auc"]]
            assert len(aucs) == 3, (site.name, aucs)  # the initial model, then rounds 0 and 1
            assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in aucs)
            assert st["metrics"]["auc"] == aucs[-1]
    assert (swarm_root / "data" / "site-1" / "signals").is_dir()
