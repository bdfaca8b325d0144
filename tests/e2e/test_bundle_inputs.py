"""A model-zoo-style bundle with its own variable names, through real daemons on a real chain:
`[bundle.inputs]` runs it unchanged in a 3-site swarm, and without the mapping `swarmd run` refuses
to start, naming the variable, instead of training on the bundle's own 2 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmd.ledger import RoundStatus
from swarmd.ops import DemoData, local_swarm, wait_until
from swarmd.task import load_task

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]

ZOO = Path(__file__).parents[1] / "bundles" / "zoo_style"
MAPPED = load_task(ZOO.parent / "zoo_style.swarm.toml").inputs.renamed()  # the documented example's mapping
SWARM = {
    "rounds": 2,
    "local_steps": 2,
    "min_peers": 2,
    "commit_window": 6,
    "leader_timeout": 8,
    "eval_every": 1,
}
DATA = DemoData(alpha=1.0, seed=3, n_per_site=16, n_test=16)  # 13 training images per site, 3 validation


def zoo_task(path: Path, inputs: dict[str, str]) -> Path:
    lines = ["[task]", 'name = "e2e-zoo"', f"bundle = {json.dumps(str(ZOO))}", "seed = 7", "[bundle.inputs]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in inputs.items()]
    lines += ["[swarm]", *(f"{k} = {json.dumps(v)}" for k, v in SWARM.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_zoo_style_bundle_runs_a_three_site_swarm_through_bundle_inputs(swarm_root: Path) -> None:
    task = zoo_task(swarm_root / "swarm.toml", MAPPED)
    with local_swarm(swarm_root, task, sites=3, data=DATA, fork=True) as swarm:
        try:
            swarm.wait_done(timeout=180)
        except BaseException:
            print(swarm.tails(80))
            raise
        rounds = [i for i in swarm.ledger.rounds() if i.status == RoundStatus.FINALIZED]
        assert [i.round for i in rounds] == [0, 1]
        # The fedavg weight each site committed is the 13 images it trained on, not the bundle's 2.
        assert {c.n_samples for i in rounds for c in i.commits} == {13}
        for st in swarm.statuses():
            assert st is not None and st["last_merged_round"] == 1 and st["n_samples"] == 13
            assert (
                0.0 <= st["metrics"]["val_auc"] <= 1.0
            )  # evaluated on the held-out list through the mapping


def test_swarmd_run_refuses_to_start_a_bundle_that_does_not_read_the_sites_data(swarm_root: Path) -> None:
    task = zoo_task(swarm_root / "swarm.toml", {})
    with local_swarm(swarm_root, task, sites=2, data=DATA, start=False, fork=True) as swarm:
        daemon = swarm.daemons[0].start()
        wait_until(lambda: not daemon.alive(), 90, 0.2, what="swarmd to refuse the task")
        log = daemon.tail(40)
        assert daemon.proc is not None and daemon.proc.returncode == 2, log  # a TaskError
        assert "BundleMismatch: bundle zoo_style does not read the data swarmd gives it" in log
        assert "train#trainer never reads `datalist`" in log
        assert "the bundle loads 2 training items, but the site's datalist" in log and "has 13" in log
        assert 'datalist = "data_list_file_path"' in log
