"""New heads pushed over a real anvil's websocket (`chain.ws_url`): each mined block reaches the
watch; a node that goes away is reported once and reconnected to when it is back; a node that never
answers leaves the watch retrying quietly, and a cancel ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from swarmd.ledger import Devnet
from swarmd.ledger.devnet import anvil_ws_url, free_port, rpc_call
from swarmd.ledger.heads import HeadWatch

pytestmark = pytest.mark.chain


class Seen:
    def __init__(self) -> None:
        self.heads: list[int] = []
        self.links: list[bool] = []

    async def until(self, check, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, (self.heads, self.links)
            await asyncio.sleep(0.02)


async def test_every_mined_block_is_pushed_and_a_restarted_node_is_followed_again(caplog) -> None:
    caplog.set_level(logging.INFO, "swarmd.heads")
    port = free_port()
    seen = Seen()
    dev = Devnet.start(port=port, accounts=2)
    watch = HeadWatch(anvil_ws_url(dev.rpc_url), seen.heads.append, seen.links.append)
    task = asyncio.ensure_future(watch.run())
    try:
        await seen.until(lambda: seen.links == [True])
        start = int(await asyncio.to_thread(rpc_call, dev.rpc_url, "eth_blockNumber"), 16)
        await asyncio.to_thread(dev.mine, 3)
        await seen.until(lambda: len(seen.heads) >= 3)
        assert seen.heads[-3:] == [start + 1, start + 2, start + 3]
        dev.stop()
        await seen.until(lambda: seen.links == [True, False])
        dev = Devnet.start(port=port, accounts=2)  # a fresh chain on the same port: followed again
        await seen.until(lambda: seen.links == [True, False, True], timeout=20.0)
        before = len(seen.heads)
        await asyncio.to_thread(dev.mine, 1)
        await seen.until(lambda: len(seen.heads) > before)
        assert seen.heads[-1] == 1
        lost = [r for r in caplog.records if "lost" in r.getMessage()]
        assert len(lost) == 1 and "polling only" in lost[0].getMessage()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        dev.stop()
    assert task.cancelled()


async def test_a_node_that_never_answers_is_retried_quietly_until_cancelled(caplog) -> None:
    caplog.set_level(logging.INFO, "swarmd.heads")
    seen = Seen()
    watch = HeadWatch(f"ws://127.0.0.1:{free_port()}", seen.heads.append, seen.links.append)
    task = asyncio.ensure_future(watch.run())
    await asyncio.sleep(2.0)  # first try, then retries after 0.5 and 1 s
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and seen.heads == [] and seen.links == [] and not watch.connected
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "polling only, retrying" in warned[0].getMessage()
