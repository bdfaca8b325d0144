"""wait_within: a timeout like asyncio.wait_for's, and a cancel that is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from swarmd.aio import wait_within


async def _cancel_as_it_completes() -> None:
    ready = asyncio.Event()
    waiting = asyncio.ensure_future(wait_within(ready.wait(), 10))
    await asyncio.sleep(0)  # now inside the wait
    ready.set()  # the awaited event completes ...
    waiting.cancel()  # ... in the same loop iteration as the cancel
    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_a_cancel_that_races_completion_still_cancels() -> None:
    asyncio.run(_cancel_as_it_completes())


def test_returns_the_result_or_times_out_and_cancels_the_awaitable() -> None:
    async def main() -> None:
        assert await wait_within(asyncio.sleep(0, result=7), 1) == 7
        slow = asyncio.ensure_future(asyncio.sleep(10))
        with pytest.raises(asyncio.TimeoutError):
            await wait_within(slow, 0.01)
        await asyncio.sleep(0)
        assert slow.cancelled()
        assert await wait_within(asyncio.sleep(0, result="x"), None) == "x"

    asyncio.run(main())
