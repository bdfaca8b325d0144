"""A sharded committer fetching another committer's leaves: a sender asked before it opened the round
holds the question until it opens it (up to OPEN_HOLD); one that refuses `not_ready` is asked again at
the same short pace, since it opens within ms of its next chain read; other failures back off. One
peer's leaves are fetched a few at a time, and a failed one leaves none of the others running behind
the retry."""

from __future__ import annotations

import asyncio
import functools

import pytest
import torch

from swarmd.daemon import shards
from swarmd.daemon.shardwork import ShardWork
from swarmd.errors import PeerRejected, TransportError
from swarmd.ledger import Member, MemberStatus
from swarmd.merge.shards import ShardLayout
from swarmd.transport import Refusal, SecAggHeader, SecAggTopic, Verdict
from swarmd.transport.shards import Leaves, LeavesAsk, decode_shard_msg

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


async def test_a_failed_fetch_leaves_none_of_its_siblings_running_behind_the_retry():
    running: set[int] = set()
    finished: list[int] = []

    async def fetch(i: int) -> None:
        running.add(i)
        try:
            await asyncio.sleep(0.05)
        finally:
            running.discard(i)
        finished.append(i)

    async def fail() -> None:
        raise TransportError("no answer from peer")

    calls = [fail, *(functools.partial(fetch, i) for i in range(3))]
    with pytest.raises(TransportError, match="no answer"):
        await shards.ShardSide.in_turn(calls, width=2)
    assert not running and sorted(finished) == [0, 1, 2]  # each ran to its end before the failure is raised

    started = asyncio.ensure_future(shards.ShardSide.in_turn([functools.partial(fetch, i) for i in range(4)]))
    await asyncio.sleep(0.01)
    started.cancel()  # the round moved on: its fetches go with it
    with pytest.raises(asyncio.CancelledError):
        await started
    await asyncio.sleep(0.1)
    assert not running and sorted(finished) == [0, 1, 2]  # all four were cut short: none finished


async def test_a_leaves_question_before_we_opened_the_round_is_held_until_we_open_it(
    unit_driver, monkeypatch
):
    """An owner that read the closing commit a few ms before us asks for our leaf hashes: the question
    waits for our round to open (the chain read at once) and is answered then, not refused `not_ready`
    and asked again after a pause. A round that does not open within OPEN_HOLD is refused as before."""
    d = unit_driver(address=ME)
    d.peers.update([Member(PEER, b"\x02" * 32, "tcp://peer", MemberStatus.ACTIVE)])
    own, theirs = model(1.0), model(2.0)
    d.journal.update(0, update_hash=d.store.put(own))
    leaves = d.task.exchange.leaves
    committed = {a: (ShardLayout(u, leaves).root(u), 1) for a, u in ((ME, own), (PEER, theirs))}
    header = SecAggHeader(0, SecAggTopic.SHARDS)
    asked = asyncio.ensure_future(d.on_secagg(d.peers.key(PEER), header, LeavesAsk(0, 0).encode()))
    await asyncio.sleep(0.05)
    assert not asked.done() and d._nudged.is_set()  # held, and the round loop told to read the chain
    await d.open_work(0, -1, "", model(0.0), committed)
    answer = await asyncio.wait_for(asked, 5)
    assert isinstance(answer, bytes)
    assert decode_shard_msg(answer) == Leaves(0, tuple(ShardLayout(own, leaves).hashes(own)))

    monkeypatch.setattr(shards, "OPEN_HOLD", 0.05)
    late = await d.on_secagg(d.peers.key(PEER), SecAggHeader(1, SecAggTopic.SHARDS), LeavesAsk(1, 0).encode())
    assert isinstance(late, Verdict) and late.reason == Refusal.NOT_READY
