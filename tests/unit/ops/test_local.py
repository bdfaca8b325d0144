"""`local_swarm()` on its own real anvil: what it records, what it stops, what `keep` leaves up."""

from __future__ import annotations

import pytest

from swarmd.errors import DevnetError, TaskError
from swarmd.ledger import Devnet, RoundStatus
from swarmd.ops import DemoData, local_swarm, recorded_devnet, task_file
from swarmd.ops.local import CHAIN_STATE
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR

pytestmark = [pytest.mark.chain]

SMALL = DemoData(alpha=1.0, seed=1, n_per_site=8, n_test=8)


@pytest.fixture
def task(tmp_path):
    return task_file(
        tmp_path / "swarm.toml",
        name="ops-test",
        bundle=BUNDLES_DIR / "cxr_densenet",
        seed=3,
        swarm={"rounds": 1, "local_steps": 1, "min_peers": 2, "merge": "fedavg", "eval_every": 0},
    )


def test_task_file_is_a_valid_task(task):
    t = load_task(task)
    assert (t.name, t.seed, t.swarm.rounds, t.swarm.merge) == ("ops-test", 3, 1, "fedavg")


def test_provisioned_without_daemons_then_everything_stops(tmp_path, task):
    root = tmp_path / "sw"
    with local_swarm(root, task, sites=2, data=SMALL, start=False) as swarm:
        assert swarm.devnet.is_running()
        assert swarm.ledger.round(0).status == RoundStatus.OPEN
        assert len(swarm.ledger.active_members()) == 2
        assert [d.proc for d in swarm.daemons] == [None, None]
        assert swarm.daemon(swarm.consortium.sites[1].address).name == "site-b"
        assert not (root / "devnet.json").exists()  # not recorded
    assert not swarm.devnet.is_running()


def test_a_failed_provisioning_stops_its_chain(tmp_path):
    bad = tmp_path / "swarm.toml"
    bad.write_text("[task]\nname = 1\n")
    with pytest.raises(TaskError), local_swarm(tmp_path / "sw", bad, sites=2, data=SMALL, record=True):
        pass
    assert recorded_devnet(tmp_path / "sw") is None


def test_kept_and_recorded_it_outlives_the_with_and_is_reused(tmp_path, task):
    root = tmp_path / "sw"
    with local_swarm(root, task, sites=2, data=SMALL, start=False, keep=True, record=True) as swarm:
        contract = swarm.consortium.contract
    try:
        dev = recorded_devnet(root)
        assert dev is not None and dev.rpc_url == swarm.devnet.rpc_url
        with local_swarm(root, task, sites=2, start=False, record=True) as again:
            assert again.consortium.contract == contract  # used, not provisioned anew
        assert recorded_devnet(root) is not None  # a reused devnet is left running
    finally:
        Devnet.load(root / "devnet.json").stop()
    assert recorded_devnet(root) is None
    # Down, then up: anvil starts again from the chain it saved, on the port the sites' configs name.
    with local_swarm(root, task, sites=2, start=False, record=True) as restarted:
        assert restarted.consortium.contract == contract
        assert restarted.devnet.rpc_url == swarm.devnet.rpc_url
        assert len(restarted.ledger.active_members()) == 2
    assert recorded_devnet(root) is None  # restarted for the `with` only: stopped again
    (root / CHAIN_STATE).unlink()
    with (
        pytest.raises(DevnetError, match="no saved chain"),
        local_swarm(root, task, start=False, record=True),
    ):
        pass
