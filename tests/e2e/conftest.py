"""A real local consortium for end-to-end tests: anvil, the deployed ledger, N sites with generated
data, and their daemons as real subprocesses. Nothing here is mocked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmd.daemon.launcher import DaemonProcess, stop_all, wait_until
from swarmd.daemon.provision import LocalConsortium, local_consortium
from swarmd.ledger import Devnet, Ledger
from swarmd.train import BUNDLES_DIR

TINY_TASK = """
[task]
name = "e2e-cxr"
bundle = "{bundle}"
seed = 7

[swarm]
rounds = {rounds}
local_steps = 2
min_peers = 2
merge = "fedavg"
commit_window = {commit_window}
leader_timeout = {leader_timeout}
fanout = 2
eval_every = 0
"""


@dataclass
class Swarm:
    devnet: Devnet
    consortium: LocalConsortium
    daemons: list[DaemonProcess]
    ledger: Ledger

    def daemon(self, address: str) -> DaemonProcess:
        site = next(s for s in self.consortium.sites if s.address == address)
        return next(d for d in self.daemons if d.name == site.name)

    def statuses(self) -> list[dict | None]:
        return [d.status() for d in self.daemons]

    def wait_done(self, timeout: float) -> None:
        def done() -> bool:
            dead = [d for d in self.daemons if d.proc is not None and not d.alive()]
            if dead:
                raise AssertionError(f"{dead[0].name} died:\n{dead[0].tail(60)}")
            sts = self.statuses()
            return all(st and st["phase"] == "done" for st in sts)

        wait_until(done, timeout, what="every site to finish its rounds")

    def print_logs(self, lines: int = 80) -> None:
        """Each daemon's last log lines: pytest shows them with a failed test's report."""
        for d in self.daemons:
            print(f"==== {d.name}\n{d.tail(lines)}")


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
) -> Iterator[Swarm]:
    """A devnet plus `sites` provisioned sites; their daemons started unless start=False."""
    task = root / "swarm.toml"
    root.mkdir(parents=True, exist_ok=True)
    task.write_text(
        TINY_TASK.format(
            bundle=BUNDLES_DIR / "cxr_densenet",
            rounds=rounds,
            commit_window=commit_window,
            leader_timeout=leader_timeout,
        )
    )
    with Devnet.start(block_time=block_time, accounts=sites + 4, state_file=chain_state) as dev:
        with dev.mining_instantly():
            consortium = local_consortium(
                root,
                rpc_url=dev.rpc_url,
                dev_keys=list(dev.dev_keys),
                task_path=task,
                sites=sites,
                alpha=1.0,
                seed=3,
                n_per_site=16,
                n_test=16,
            )
        daemons = [DaemonProcess(s.name, s.config, s.config.parent / "swarmd.log") for s in consortium.sites]
        swarm = Swarm(dev, consortium, daemons, Ledger(dev.rpc_url, consortium.contract))
        try:
            if start:
                for d in daemons:
                    d.start()
            yield swarm
        except BaseException:
            swarm.print_logs()
            raise
        finally:
            stop_all(daemons, timeout=20)


@pytest.fixture
def swarm_root(tmp_path_factory) -> Path:
    # unix socket paths must stay short: keep the tree near /tmp
    return tmp_path_factory.mktemp("sw")


@pytest.fixture
def swarm_factory():
    """`running_swarm` as a fixture, so test modules need not import the conftest."""
    return running_swarm
