"""Gossip over a fake transport boundary (the real one is in the e2e swarm tests): what is served,
when an announce leads to a fetch, who is pulled from, what a failed fetch leaves behind, and how
many chain reads a flood of announces of unknown hashes may cost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import torch

from swarmd.codec import content_hash
from swarmd.daemon.gossip import (
    ANNOUNCE_TIMEOUT,
    MAX_LOOKUPS,
    NOT_ON_CHAIN_KEPT,
    NOT_ON_CHAIN_TTL,
    Gossip,
    Peers,
    children,
    tree_order,
)
from swarmd.daemon.store import ModelStore
from swarmd.errors import TransportError
from swarmd.ledger import Member, MemberStatus, RoundInfo, RoundStatus

KEYS = {name: bytes([i + 1]) * 32 for i, name in enumerate("abcd")}


def _model(seed: int) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(6, 3, generator=torch.Generator().manual_seed(seed))}


class FakeNode:
    """The transport boundary: peers that hold models, and a log of what was asked of whom."""

    def __init__(self, holders: dict[bytes, dict[bytes, dict[str, torch.Tensor]]]) -> None:
        self.holders = holders  # peer key -> {hash: state}
        self.fetches: list[bytes] = []
        self.announces: list[bytes] = []
        self.silent: set[bytes] = set()
        self.announce_timeouts: list[float | None] = []

    async def fetch_model(
        self, peer: bytes, h: bytes, *, max_bytes: int, relay: Callable[[], object] | None = None
    ) -> dict[str, torch.Tensor]:
        self.fetches.append(peer)
        held = self.holders.get(peer, {})
        if h not in held:
            raise TransportError("not served")
        if relay is not None:  # the stream starts: the fetcher may pass the announce on now
            relay()
        await asyncio.sleep(0)
        return {k: v.clone() for k, v in held[h].items()}

    async def announce(
        self, peer: bytes, *, round: int, model_hash: bytes, timeout: float | None = None
    ) -> None:
        self.announces.append(peer)
        self.announce_timeouts.append(timeout)
        if peer in self.silent:  # a member that never answers: the node gave up after `timeout`
            raise TransportError("no answer")


def _gossip(tmp_path, node: FakeNode, info: RoundInfo, fanout: int = 2) -> Gossip:
    peers = Peers(me="a")
    peers.update(Member(n, KEYS[n], f"tcp://{n}", MemberStatus.ACTIVE) for n in "abcd")

    async def round_info(r: int) -> RoundInfo:
        return info

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    return Gossip(
        node=node,
        store=ModelStore(tmp_path / "ckpt"),
        peers=peers,
        fanout=fanout,
        max_bytes=1 << 20,
        round_info=round_info,
        sleep=sleep,
        poll=0.25,
        on_stored=lambda: None,
    )


async def _settle(g: Gossip) -> None:
    """Until the gossip's background work (fetches started by announces, announces passed on) is done."""
    while g._background:
        await asyncio.gather(*list(g._background))


def _finalized(h: bytes, leader: str = "c") -> RoundInfo:
    return RoundInfo(
        round=0, status=RoundStatus.FINALIZED, term=1, leader=leader, commits=(), failed_leaders=(),
        base_hash=b"\2" * 32, merged_hash=h, included=(leader,), opened_block=1, first_commit_block=2,
        elected_block=3, finalized_block=4,
    )  # fmt: skip


def test_only_models_marked_servable_are_served(tmp_path):
    g = _gossip(tmp_path, FakeNode({}), _finalized(b"\0" * 32))
    own_update = _model(1)
    h = g.store.put(own_update)
    assert g.serve_model(h) is None  # held, but not a model the chain lists
    g.servable.add(h)
    manifest, frames = g.serve_model(h)
    assert manifest.names == ("w",) and sum(f.nbytes for f in frames) == 6 * 3 * 4


async def test_announce_of_the_model_on_chain_is_fetched_stored_and_passed_on(tmp_path):
    merged = _model(2)
    h = content_hash(merged)
    node = FakeNode({KEYS["b"]: {h: merged}})
    g = _gossip(tmp_path, node, _finalized(h))
    g.on_announce(KEYS["b"], 0, h)
    await _settle(g)
    assert h in g.servable and g.store.holds(h)
    await g.durable(h)  # written behind the round's back; a commit waits for it
    assert torch.equal(g.store.get(h, keep=False)["w"], merged["w"])  # on disk, verified on read
    # c led round 0: its tree is c -> (a, b), a -> (d), so we (a) pass the announce on to d alone
    assert node.announces == [KEYS["d"]]


async def test_announce_of_a_model_not_on_chain_is_ignored(tmp_path):
    merged = _model(3)
    h = content_hash(merged)
    node = FakeNode({KEYS["b"]: {h: merged}})
    g = _gossip(tmp_path, node, _finalized(b"\1" * 32))
    g.on_announce(KEYS["b"], 0, h)
    await _settle(g)
    assert node.fetches == [] and not g.store.holds(h) and h not in g.servable


async def test_pull_asks_the_leader_first_then_any_member(tmp_path):
    merged = _model(4)
    h = content_hash(merged)
    node = FakeNode({KEYS["d"]: {h: merged}})  # the leader c lost it; only d serves it
    g = _gossip(tmp_path, node, _finalized(h, leader="c"), fanout=0)
    await asyncio.wait_for(g.wait_for(h, 0), timeout=10)
    assert node.fetches[0] == KEYS["c"] and node.fetches[-1] == KEYS["d"]
    assert g.store.holds(h)


async def test_nobody_serving_keeps_pulling_with_backoff(tmp_path):
    h = content_hash(_model(5))
    node = FakeNode({})
    g = _gossip(tmp_path, node, _finalized(h))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(g.wait_for(h, 0), timeout=0.5)
    assert len(node.fetches) >= 3 and not g.store.holds(h)


async def test_announces_of_unknown_hashes_start_few_chain_reads_and_the_rest_are_dropped_and_counted(
    tmp_path,
):
    reads: list[int] = []
    release = asyncio.Event()
    dropped: list[str] = []
    g = _gossip(tmp_path, FakeNode({}), _finalized(b"\1" * 32))

    async def slow_round_info(r: int) -> RoundInfo:  # a busy chain thread
        reads.append(r)
        await release.wait()
        return _finalized(b"\1" * 32)

    g.round_info, g.on_dropped = slow_round_info, dropped.append
    junk = [bytes([i]) * 32 for i in range(2, 202)]  # 200 random-looking hashes
    for h in junk:
        g.on_announce(KEYS["b"], 0, h)
        g.on_announce(KEYS["c"], 0, h)  # the same announce again, from someone else
    await asyncio.sleep(0)
    assert len(reads) == MAX_LOOKUPS  # bounded: the rest never reach the chain thread
    assert len(dropped) == 2 * (len(junk) - MAX_LOOKUPS)  # a duplicate of a read in flight is free
    assert set(dropped) == {"announce_busy"}
    release.set()
    await asyncio.gather(*g._background)
    # an announce the chain did not confirm is remembered: repeating it costs no chain read
    dropped.clear()
    for h in junk[:MAX_LOOKUPS]:
        g.on_announce(KEYS["b"], 0, h)
    await asyncio.sleep(0)
    assert len(reads) == MAX_LOOKUPS and dropped == ["announce_not_on_chain"] * MAX_LOOKUPS
    assert len(g._not_on_chain) <= NOT_ON_CHAIN_KEPT and not g._looking


async def test_a_refused_announce_is_looked_up_again_once_its_memory_expires(tmp_path, monkeypatch):
    merged = _model(6)
    h = content_hash(merged)
    node = FakeNode({KEYS["b"]: {h: merged}})
    info = [_finalized(b"\1" * 32)]  # our RPC node lags: not finalized there yet

    g = _gossip(tmp_path, node, info[0])

    async def round_info(r: int) -> RoundInfo:
        return info[0]

    g.round_info = round_info
    g.on_announce(KEYS["b"], 0, h)
    await asyncio.gather(*g._background)
    info[0] = _finalized(h)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + NOT_ON_CHAIN_TTL + 1)
    g.on_announce(KEYS["b"], 0, h)
    await asyncio.gather(*g._background)
    assert g.store.holds(h) and node.fetches == [KEYS["b"]]


async def test_a_member_that_never_answers_an_announce_holds_the_spread_only_briefly(tmp_path):
    node = FakeNode({})
    node.silent = {KEYS[n] for n in "bcd"}
    g = _gossip(tmp_path, node, _finalized(b"\1" * 32), fanout=3)
    await g.spread(0, b"\1" * 32, leader=None)  # the silent peers are skipped, nothing raises
    assert len(node.announces) == 3
    # each announce waits ANNOUNCE_TIMEOUT, not the transport's 30 s request timeout
    assert node.announce_timeouts == [ANNOUNCE_TIMEOUT] * 3 and ANNOUNCE_TIMEOUT <= 2.0


def test_the_tree_reaches_every_member_once_and_a_different_site_relays_each_round() -> None:
    members = [f"0x{i:02x}" for i in range(8)]
    relays = set()
    for r in range(8):
        order = tree_order("0x05", members, r)
        reached = [kid for a in order for kid in children(order, a, 2)]
        assert order[0] == "0x05" and sorted(reached) == sorted(a for a in members if a != "0x05")
        relays.add(tuple(a for a in order if children(order, a, 2) and a != "0x05"))
    assert len(relays) > 1
    assert children(["a"], "a", 2) == [] and children(["a", "b"], "z", 2) == []


async def test_a_child_that_does_not_take_the_announce_has_its_children_announced_to(tmp_path) -> None:
    node = FakeNode({})
    node.silent = {KEYS["b"]}
    g = _gossip(tmp_path, node, _finalized(b"\1" * 32), fanout=1)
    await g.spread(0, b"\1" * 32, leader="a")  # we lead: the tree is a -> b -> c -> d
    assert node.announces == [KEYS["b"], KEYS["c"]]  # c then passes it on to d as usual


async def test_a_fetched_model_is_trained_from_memory_while_the_disk_write_goes_on(tmp_path) -> None:
    merged = _model(7)
    h = content_hash(merged)
    g = _gossip(tmp_path, FakeNode({KEYS["b"]: {h: merged}}), _finalized(h))
    disk = threading.Event()
    put = g.store.put

    def slow_put(*args: object, **kw: object) -> object:
        disk.wait(10)  # a slow fsync
        return put(*args, **kw)  # type: ignore[arg-type]

    g.store.put = slow_put  # type: ignore[method-assign]
    assert await g.fetch_from([KEYS["b"]], h, 0, leader="c")
    assert g.store.holds(h) and not g.store.has(h)  # usable now, not yet on disk
    waiting = asyncio.ensure_future(g.durable(h))  # what a commit does first
    await asyncio.sleep(0.05)
    assert not waiting.done()
    disk.set()
    await asyncio.wait_for(waiting, 10)
    assert g.store.has(h)


async def test_when_the_announcer_fails_mid_stream_the_model_comes_from_the_leader(tmp_path) -> None:
    merged = _model(8)
    h = content_hash(merged)
    node = FakeNode(
        {KEYS["c"]: {h: merged}}
    )  # b announced, but its own download broke off: it serves nothing
    g = _gossip(tmp_path, node, _finalized(h, leader="c"))
    g.on_announce(KEYS["b"], 0, h)
    await _settle(g)
    assert node.fetches == [KEYS["b"], KEYS["c"]] and g.store.holds(h)
