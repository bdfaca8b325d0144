"""A pushed head (`chain.ws_url`) wakes a round waiting between chain polls, and feeds the block clock;
`swarm status` says whether heads are pushed or the site is polling."""

from __future__ import annotations

import asyncio
import time

from swarmd.cli.status_cmd import _chain
from swarmd.daemon import plumbing


async def test_a_new_head_ends_the_wait_for_the_next_poll(unit_driver) -> None:
    d = unit_driver(heads_url="ws://127.0.0.1:8546")
    assert d.heads is not None and d.state.chain_heads == "lost"  # until the subscription is up
    t0 = time.monotonic()
    asyncio.get_running_loop().call_later(0.1, d.saw_head, 41)
    asyncio.get_running_loop().call_later(0.2, d.saw_head, 42)
    await d.sleep(d.poll)
    assert time.monotonic() - t0 < 5.0  # woken by the first head, not the 30 s poll
    await asyncio.sleep(0.2)
    assert d.blocks.seconds_per_block() is not None  # two heads: the block clock has a pace
    d.heads_link(True)
    assert d.state.chain_heads == "pushed"
    assert _chain(d.state.snapshot()) == "reachable, new blocks pushed"
    d.heads_link(False)
    assert "polling: the websocket for new blocks is down" in _chain(d.state.snapshot())


async def test_without_a_websocket_the_site_polls(unit_driver) -> None:
    d = unit_driver()
    assert d.heads is None and d.state.chain_heads == "off"
    assert _chain(d.state.snapshot()) == "reachable, polling"
    d.state.chain_ok = False
    assert "unreachable" in _chain(d.state.snapshot())


async def test_with_heads_pushed_the_member_list_is_read_after_a_new_block_or_a_while(
    unit_driver, monkeypatch
):
    """Members change only in a block: while heads are pushed, a poll with no new block skips the
    member list (the dearest read), though never for longer than FOLLOW_AT_LEAST; the block clock
    runs on the heads. Without them, every poll reads both, as before."""
    monkeypatch.setattr(plumbing, "FOLLOW_AT_LEAST", 0.5)
    d = unit_driver(heads_url="ws://127.0.0.1:8546", poll=0.01)
    reads: list[int | None] = []
    clock_reads: list[int] = []

    async def refresh_members(*, aside: bool = False) -> None:
        assert aside  # on the members' own thread: the round's reads do not queue behind it
        reads.append(d.blocks.latest)

    async def block_number() -> int:
        clock_reads.append(1)
        return 0

    d.refresh_members = refresh_members  # type: ignore[method-assign]
    d.block_number = block_number  # type: ignore[method-assign]
    assert d.heads is not None
    d.heads.connected = True
    d.saw_head(10)
    follower = asyncio.ensure_future(d.follow_members())
    try:
        await asyncio.sleep(0.2)
        assert reads == [10]  # about 20 polls, one new block
        d.saw_head(11)
        await asyncio.sleep(0.1)
        assert reads == [10, 11]
        await asyncio.sleep(0.6)
        assert reads[2:3] == [11]  # no block for FOLLOW_AT_LEAST: read all the same
        assert clock_reads == []
        d.heads.connected = False  # the socket is down: poll as without it
        before = len(reads)
        await asyncio.sleep(0.2)
        assert len(reads) - before > 5 and len(clock_reads) > 5
    finally:
        d.stopping.set()
        await asyncio.wait_for(follower, 5)
