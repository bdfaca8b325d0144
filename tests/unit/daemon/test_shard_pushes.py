"""The leader's plan pushes (`Pushes`): a committer gets a new plan as soon as it answered the one
before, the same plan again only after CYCLE, and none while a push to it is in flight; the coordinator
sleeps until the next push is due, or not at all when an answer waits to be read."""

from __future__ import annotations

import asyncio

import pytest

from swarmd.daemon.shards import CYCLE, Pushes


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
    assert not pushes.due("b", 5, now=100.0)  # in flight: even a newer plan waits for its answer
    assert pushes.next_due(0.0) == CYCLE
    answer.set_result((True, None))
    await asyncio.sleep(0)
    assert pushes.next_due(0.0) == 0.0
