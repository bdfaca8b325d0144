"""`wait_within`: asyncio.wait_for, minus the flaw that can swallow a cancel on Python < 3.12.

On 3.10 and 3.11, when a task is cancelled in the same loop iteration as the awaitable it waits
for completes, wait_for returns the result and the cancel is lost (python/cpython#86296). A caller
that gave up (a fetch abandoned mid-stream) then keeps running to the end, with no one waiting.
3.12 rebuilt wait_for on asyncio.timeout, which does not have the flaw.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_within(aw: Awaitable[T], timeout: float | None) -> T:
    """Await `aw` for at most `timeout` seconds (None: no limit). Raises asyncio.TimeoutError."""
    if sys.version_info >= (3, 12):
        return await asyncio.wait_for(aw, timeout)
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except asyncio.CancelledError:
        fut.cancel()  # the cancel wins, even when `fut` has just finished
        raise
    if not done:
        fut.cancel()
        raise asyncio.TimeoutError
    return fut.result()
