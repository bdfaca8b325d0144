"""Gossip over a fake transport boundary (the real one is in the e2e swarm tests): what is served,
when an announce leads to a fetch, who is pulled from, and what a failed fetch leaves behind."""

from __future__ import annotations

import asyncio

import pytest
import torch

from swarmd.codec import content_hash
from swarmd.daemon.gossip import Gossip, Peers
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

    async def fetch_model(self, peer: bytes, h: bytes, *, max_bytes: int) -> dict[str, torch.Tensor]:
        self.fetches.append(peer)
        held = self.holders.get(peer, {})
        if h not in held:
            raise TransportError("not served")
        return {k: v.clone() for k, v in held[h].items()}

    async def announce(self, peer: bytes, *, round: int, model_hash: bytes) -> None:
        self.announces.append(peer)


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
    await asyncio.gather(*g._background)
    assert torch.equal(g.store.get(h, keep=False)["w"], merged["w"])  # on disk, verified on read
    assert h in g.servable
    assert node.announces and KEYS["b"] not in node.announces and len(node.announces) == 2  # fanout, onward


async def test_announce_of_a_model_not_on_chain_is_ignored(tmp_path):
    merged = _model(3)
    h = content_hash(merged)
    node = FakeNode({KEYS["b"]: {h: merged}})
    g = _gossip(tmp_path, node, _finalized(b"\1" * 32))
    g.on_announce(KEYS["b"], 0, h)
    await asyncio.gather(*g._background)
    assert node.fetches == [] and not g.store.has(h) and h not in g.servable


async def test_pull_asks_the_leader_first_then_any_member(tmp_path):
    merged = _model(4)
    h = content_hash(merged)
    node = FakeNode({KEYS["d"]: {h: merged}})  # the leader c lost it; only d serves it
    g = _gossip(tmp_path, node, _finalized(h, leader="c"), fanout=0)
    await asyncio.wait_for(g.wait_for(h, 0), timeout=10)
    assert node.fetches[0] == KEYS["c"] and node.fetches[-1] == KEYS["d"]
    assert g.store.has(h)


async def test_nobody_serving_keeps_pulling_with_backoff(tmp_path):
    h = content_hash(_model(5))
    node = FakeNode({})
    g = _gossip(tmp_path, node, _finalized(h))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(g.wait_for(h, 0), timeout=0.5)
    assert len(node.fetches) >= 3 and not g.store.has(h)
