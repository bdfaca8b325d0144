"""A sharded committer fetching another committer's leaves: a sender that has not opened the round yet
(`not_ready`) is asked again at the same short pace, since it opens within ms of its next chain read;
other failures back off."""

from __future__ import annotations

import pytest
import torch

from swarmd.daemon import shards
from swarmd.daemon.shardwork import ShardWork
from swarmd.errors import PeerRejected, TransportError
from swarmd.ledger import Member, MemberStatus
from swarmd.merge.shards import ShardLayout
from swarmd.transport import Refusal
from swarmd.transport.shards import Leaves

ME, PEER = "0x" + "a" * 40, "0x" + "b" * 40


def model(seed: float) -> dict[str, torch.Tensor]:
    return {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4) + seed, "b": torch.full((5,), seed)}


@pytest.mark.parametrize(
    ("failure", "pauses"),
    [
        (PeerRejected("refused: not_ready", reason=str(Refusal.NOT_READY)), [0.05, 0.05, 0.05]),
        (TransportError("timed out"), [0.05, 0.1, 0.2]),
    ],
)
async def test_a_sender_not_ready_is_asked_again_without_backing_off(
    unit_driver, monkeypatch, failure, pauses
):
    d = unit_driver(address=ME)
    d.peers.update([Member(PEER, b"\x02" * 32, "tcp://peer", MemberStatus.ACTIVE)])
    theirs = model(2.0)
    layout = ShardLayout(theirs, 4)
    hashes = tuple(layout.hashes(theirs))
    committed = {ME: (ShardLayout(model(1.0), 4).root(model(1.0)), 1), PEER: (layout.root(theirs), 1)}
    work = ShardWork(0, 1, ME, ME, model(0.0), model(1.0), committed, is_diff=False, leaves=4)
    work.adopt(shards.opening_plan(0, 1, [ME, PEER], 4))
    failures = [failure] * 3
    slept: list[float] = []

    async def ask_shards(peer, r, msg):
        if failures:
            raise failures.pop()
        return Leaves(0, hashes)

    async def fetch_leaf(peer, h):
        return layout.leaf(theirs, hashes.index(h))

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(shards.asyncio, "sleep", sleep)
    d.ask_shards = ask_shards
    d.fetch_leaf = fetch_leaf
    await d.fetch_leaves(work, PEER)
    assert slept == pauses and work.missing(PEER) == [] and work.mine()
