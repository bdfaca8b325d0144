"""A real local consortium for end-to-end tests: anvil, the deployed ledger, N sites with generated
data, and their daemons as real subprocesses (`swarmd.ops.local_swarm`). Nothing here is mocked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmd.ops import DemoData, LocalSwarm, local_swarm, task_file
from swarmd.train import BUNDLES_DIR


@contextlib.contextmanager
def running_swarm(
    root: Path,
    *,
    sites: int = 3,
    rounds: int = 3,
    block_time: float | None = None,
    start: bool = True,
    commit_window: int = 6,
    leader_timeout: int = 8,
    chain_state: Path | None = None,
) -> Iterator[LocalSwarm]:
    """A devnet plus `sites` provisioned sites; their daemons started unless start=False. On a
    failure each daemon's last log lines are printed: pytest shows them with the test's report."""
    task = task_file(
        root / "swarm.toml",
        name="e2e-cxr",
        bundle=BUNDLES_DIR / "cxr_densenet",
        seed=7,
        swarm={
            "rounds": rounds,
            "local_steps": 2,
            "min_peers": 2,
            "merge": "fedavg",
            "commit_window": commit_window,
            "leader_timeout": leader_timeout,
            "fanout": 2,
            "eval_every": 0,
        },
    )
    data = DemoData(alpha=1.0, seed=3, n_per_site=16, n_test=16)
    with local_swarm(
        root, task, sites=sites, block_time=block_time, data=data, start=start, chain_state=chain_state
    ) as swarm:
        try:
            yield swarm
        except BaseException:
            print(swarm.tails(80))
            raise


@pytest.fixture
def swarm_root(tmp_path_factory) -> Path:
    # unix socket paths must stay short: keep the tree near /tmp
    return tmp_path_factory.mktemp("sw")


@pytest.fixture
def swarm_factory():
    """`running_swarm` as a fixture, so test modules need not import the conftest."""
    return running_swarm
