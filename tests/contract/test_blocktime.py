"""The round on a chain with real block times (anvil --block-time 1), where transactions wait for the
next block and elect() must wait for the commit window and the reveals. Slow: kept to one test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from chainkit import N_ACCOUNTS, commit, deploy_consortium, finalize, h32, reveal_all
from eth_account import Account

from swarmd.ledger import Devnet, RoundStatus, errors
from swarmd.ledger.devnet import rpc_call

pytestmark = [pytest.mark.chain, pytest.mark.slow]


@pytest.fixture(scope="module")
def slow_devnet() -> Iterator[Devnet]:
    with Devnet.start(block_time=1, accounts=N_ACCOUNTS) as dev:
        yield dev


def _wait(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.1)


def test_round_with_one_second_blocks(slow_devnet: Devnet) -> None:
    accounts = [Account.from_key(k) for k in slow_devnet.dev_keys]
    # Set-up (deploy, joins, admissions) is not under test: mine it instantly, then go back to 1 s blocks.
    rpc_call(slow_devnet.rpc_url, "evm_setAutomine", [True])
    c = deploy_consortium(slow_devnet, accounts, sites=3, min_peers=2, commit_window=2, leader_timeout=2)
    rpc_call(slow_devnet.rpc_url, "evm_setAutomine", [False])
    rpc_call(slow_devnet.rpc_url, "evm_setIntervalMining", [1])
    t0 = time.monotonic()
    # Two of three commit; the third stays silent, so elect() must wait for the commit window.
    for i, site in enumerate(c.sites[:2]):
        commit(site, 0, h32(f"u{i}"), 5)
    info = c.admin.round(0)
    window_end = info.first_commit_block + 2  # type: ignore[operator]
    if c.admin.block_number() + 1 < window_end:
        with pytest.raises(errors.CommitWindowOpen):
            c.admin.elect(0)
    _wait(lambda: c.admin.can_reveal(0), timeout=10)
    reveal_all(c, 0)  # commits closed with the window: the two committers reveal, the election need not wait
    _wait(lambda: c.admin.can_elect(0), timeout=10)
    c.admin.elect(0)
    info = c.admin.round(0)
    assert info.status is RoundStatus.ELECTED and info.elected_block >= window_end  # type: ignore[operator]

    # The leader stalls: after leaderTimeout blocks anyone may reelect, and the other committer leads.
    _wait(lambda: c.admin.can_reelect(0), timeout=10)
    c.admin.reelect(0)
    second = c.admin.round(0)
    assert second.term == 2 and second.leader != info.leader and second.leader in second.committers
    finalize(c, 0, h32("merged"))
    assert c.admin.round(0).status is RoundStatus.FINALIZED
    assert 3 < time.monotonic() - t0 < 30  # real 1 s blocks, not instant mining
