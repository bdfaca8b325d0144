"""The leader's plan pushes (`Pushes`): a committer gets a new plan as soon as it answered the one
before or while it holds its answer to the one before, the same plan again at once when its answer had
news and otherwise only after CYCLE, and not while a push of it is in flight; the coordinator sleeps
until the next push is due, or not at all when an answer waits to be read. A committer holds its
answer until its status changes, up to HOLD, or until a newer plan comes; the owner loop, which makes
that status, merges what came in while it was merging without sleeping first."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from swarmd.daemon import shards
from swarmd.daemon.shards import CYCLE, Pushes, ShardSide
from swarmd.transport.shards import Status

HELD_NONE = Status(3, 1, 1, (), {}, {})
HELD_B = Status(3, 1, 1, ("0xb",), {}, {})


def test_a_new_plan_is_due_at_once_the_same_plan_only_after_a_cycle() -> None:
    pushes = Pushes()
    assert pushes.due("b", 0, now=10.0)  # never pushed
    pushes.sent["b"] = (0, 10.0)
    assert not pushes.due("b", 0, now=10.0 + CYCLE / 2)
    assert pushes.due("b", 1, now=10.0 + CYCLE / 2)  # epoch 1 does not wait out the cycle
    assert pushes.due("b", 0, now=10.0 + 1.01 * CYCLE)
    assert pushes.next_due(10.0 + CYCLE / 4) == pytest.approx(CYCLE * 3 / 4)
    assert pushes.next_due(10.0 + 5 * CYCLE) == 0.0
    assert Pushes().next_due(0.0) == CYCLE  # nothing sent: the plain cycle


async def test_no_push_while_one_is_in_flight_and_an_answer_waiting_is_read_at_once() -> None:
    pushes = Pushes()
    answer: asyncio.Future[tuple[bool, None]] = asyncio.get_running_loop().create_future()
    pushes.asks["b"] = asyncio.ensure_future(answer)
    pushes.sent["b"] = (0, 0.0)
    assert not pushes.due("b", 0, now=100.0)  # in flight (held by the committer): not the same plan again
    assert pushes.due("b", 5, now=100.0)  # a newer plan goes at once: the held answer is about the old one
    assert pushes.next_due(0.0) == CYCLE
    answer.set_result((True, None))
    await asyncio.sleep(0)
    assert pushes.next_due(0.0) == 0.0


def test_an_answer_with_news_is_followed_by_the_next_push_at_once() -> None:
    pushes = Pushes()
    pushes.pushed("b", 1, now=10.0)
    pushes.answered("b", HELD_NONE)  # the first answer is news
    assert pushes.due("b", 1, now=10.01) and pushes.next_due(10.01) == 0.0
    pushes.pushed("b", 1, now=10.01)
    pushes.answered("b", HELD_NONE)  # the same status: held until HOLD ran out, nothing new
    assert not pushes.due("b", 1, now=10.02) and pushes.next_due(10.02) == pytest.approx(CYCLE - 0.01)
    pushes.pushed("b", 1, now=10.2)
    pushes.answered("b", HELD_B)  # a piece arrived: asked again without waiting out the cycle
    assert pushes.due("b", 1, now=10.21)


@dataclasses.dataclass
class _Plan:
    epoch: int


@dataclasses.dataclass
class _Work:
    now: Status
    over: bool = False
    plan: _Plan = dataclasses.field(default_factory=lambda: _Plan(1))

    def status(self) -> Status:
        return self.now


async def test_a_committer_holds_an_unchanged_answer_until_its_status_changes(monkeypatch) -> None:
    monkeypatch.setattr(shards, "HOLD", 5.0)
    side = ShardSide.__new__(ShardSide)  # only its answer to the leader is exercised
    work = _Work(HELD_NONE)
    assert await asyncio.wait_for(side.news_for_leader(work, 1), 1.0) == HELD_NONE  # first: at once
    held = asyncio.ensure_future(side.news_for_leader(work, 1))
    await asyncio.sleep(0.05)
    assert not held.done()  # nothing new to tell
    work.now = HELD_B
    side.wake()
    assert await asyncio.wait_for(held, 1.0) == HELD_B  # told as soon as it changed, not after HOLD


async def test_an_unchanged_answer_is_sent_after_hold(monkeypatch) -> None:
    monkeypatch.setattr(shards, "HOLD", 0.05)
    side = ShardSide.__new__(ShardSide)
    work = _Work(HELD_NONE)
    await side.news_for_leader(work, 1)
    assert await asyncio.wait_for(side.news_for_leader(work, 1), 1.0) == HELD_NONE  # the leader's liveness


async def test_a_held_answer_ends_when_a_newer_plan_comes() -> None:
    side = ShardSide.__new__(ShardSide)
    work = _Work(HELD_NONE)
    await side.news_for_leader(work, 1)
    held = asyncio.ensure_future(side.news_for_leader(work, 1))
    await asyncio.sleep(0.05)
    work.plan, work.now = _Plan(2), dataclasses.replace(HELD_NONE, epoch=2)  # the leader's next plan
    side.wake()
    await asyncio.wait_for(held, 1.0)
    # the push of plan 2 is answered at once: the dropped answer about plan 1 did not count as told
    assert await asyncio.wait_for(side.news_for_leader(work, 2), 1.0) == work.now


class _Merging:
    """A work whose leaf 0 is ready to merge; leaf 1's pieces arrive while leaf 0 is being merged."""

    def __init__(self) -> None:
        self.over, self.plan, self.gathered, self.round = False, None, None, 3
        self.ready, self.merged = [0], []
        self.merging = threading.Event()
        self.release = threading.Event()

    def senders(self) -> list[str]:
        return []

    def to_merge(self) -> list[int]:
        ready, self.ready = self.ready, []
        return ready

    def merge(self, i: int, rule: object) -> tuple[bytes, dict]:
        self.merging.set()
        self.release.wait(5)
        self.merged.append(i)
        return bytes([i]) * 32, {}


async def test_pieces_that_arrive_during_a_merge_are_merged_without_waiting_for_the_idle_timeout(
    monkeypatch,
) -> None:
    monkeypatch.setattr(shards, "OWNER_IDLE", 60.0)  # the loop's fallback: never reached here
    side = ShardSide.__new__(ShardSide)
    side._shard_serve = None
    work = _Merging()
    owner = asyncio.ensure_future(side.own_shards(work))  # type: ignore[arg-type]
    try:
        await asyncio.to_thread(work.merging.wait, 5)
        work.ready = [1]  # the last piece of leaf 1 came in: its fetch woke the loop, which was merging
        side.wake()
        work.release.set()
        for _ in range(200):
            if work.merged == [0, 1]:
                break
            await asyncio.sleep(0.01)
        assert work.merged == [0, 1]  # leaf 1 now, not after OWNER_IDLE (the wake found no one waiting)
    finally:
        work.over = True
        owner.cancel()
