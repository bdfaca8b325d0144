"""Before masking, a secure-aggregation committer waits for the other members' keys: `commit_window`
blocks from the round's opening or from when this site came to the round, whichever is later. Against a
faked chain whose block advances one per read and on which the peer never advertises."""

from __future__ import annotations

import dataclasses

import pytest

from swarmd.daemon.rounds import RoundDriver
from swarmd.ledger import Member, MemberStatus, RoundInfo, RoundStatus
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR
from swarmd.transport import PeerId

ME, PEER = "0x" + "1" * 40, "0x" + "2" * 40
WINDOW = 6


class SlowChain:
    """A round opened at `opened`; the chain's head starts at `head` and moves one block per read."""

    def __init__(self, opened: int, head: int) -> None:
        self.opened, self.head = opened, head

    def round(self, r: int) -> RoundInfo:
        return RoundInfo(
            round=r, status=RoundStatus.OPEN, term=0, leader=None, commits=(), failed_leaders=(),
            base_hash=b"\0" * 32, merged_hash=b"\0" * 32, included=(), opened_block=self.opened,
            first_commit_block=None, elected_block=None, finalized_block=None, key_count=0,
        )  # fmt: skip

    def advertised_keys(self, r: int) -> list[object]:
        return []  # the peer never advertises

    def block_number(self) -> int:
        self.head += 1
        return self.head


@pytest.fixture
def driver(unit_driver, tmp_path) -> RoundDriver:
    task = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")
    task = dataclasses.replace(
        task,
        privacy=dataclasses.replace(task.privacy, secure_aggregation=True),
        swarm=dataclasses.replace(task.swarm, commit_window=WINDOW),
    )
    d = unit_driver(ledger=SlowChain(0, 0), address=ME, poll=0.001, task=task)
    d.setup_secure(tmp_path / "state")
    d.peers.update([Member(PEER, PeerId(b"\x07" * 32), "tcp://peer", MemberStatus.ACTIVE)])
    return d


@pytest.mark.parametrize(
    ("opened", "head", "until"),
    [
        (100, 100, 100 + WINDOW),  # the site came as the round opened: the window counts from the opening
        (0, 100, 101 + WINDOW),  # round 0 opened long before this daemon was up: from its arrival
    ],
)
async def test_a_missing_peer_gets_the_window_from_the_opening_or_our_arrival(
    driver: RoundDriver, opened: int, head: int, until: int
) -> None:
    chain = SlowChain(opened, head)
    driver.ledger = chain  # type: ignore[assignment]
    await driver.await_keys(0)
    # it gave up on the peer at the window's end (the head moves one block per read), not at once
    assert until <= chain.head <= until + 2
