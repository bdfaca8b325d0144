"""Serve slots per peer (`server.PeerSlots`): a peer holds at most `per_peer` at once, so one that
stopped reading (a dead fetcher whose serves stall) cannot take every slot of the node from the others;
a peer's entry is dropped once none of its requests holds or waits for a slot."""

from __future__ import annotations

import asyncio

from swarmd.transport.server import PeerSlots


async def test_a_peer_holds_at_most_its_share_and_others_are_not_held_up() -> None:
    slots, held = PeerSlots(2), asyncio.Event()
    inside: dict[bytes, int] = {b"dead": 0, b"live": 0}

    async def serve(peer: bytes, release: asyncio.Event) -> None:
        async with slots.slot(peer):
            inside[peer] += 1
            await release.wait()

    stuck = [asyncio.ensure_future(serve(b"dead", held)) for _ in range(5)]  # never released
    done = asyncio.Event()
    done.set()
    live = [asyncio.ensure_future(serve(b"live", done)) for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*live), 2)
    assert inside == {b"dead": 2, b"live": 3} and slots.users(b"dead") == 5 and slots.users(b"live") == 0
    held.set()
    await asyncio.wait_for(asyncio.gather(*stuck), 2)
    assert inside[b"dead"] == 5 and slots.users(b"dead") == 0 and not slots._of


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    slots, never = PeerSlots(1), asyncio.Event()

    async def hold() -> None:
        async with slots.slot(b"p"):
            await never.wait()

    first, second = asyncio.ensure_future(hold()), asyncio.ensure_future(hold())
    await asyncio.sleep(0.01)
    assert slots.users(b"p") == 2
    second.cancel()
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert slots.users(b"p") == 0 and not slots._of
