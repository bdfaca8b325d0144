"""The round driver repairs bad stored models instead of stopping: a corrupt initial model is
quarantined and rebuilt from the task, one that cannot be rebuilt to the chain's hash is fetched
from a peer (retried, reported, never raised), and a corrupt merged model is fetched again. The chain
and the peers are faked at their boundary (Ledger calls, Transport.fetch_model); the store is real."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
import torch

from swarmd.checkpoint import QUARANTINE
from swarmd.codec import content_hash
from swarmd.daemon.state import ProblemKind
from swarmd.daemon.store import ModelStore
from swarmd.errors import TransportError
from swarmd.ledger import DeployParams, Member, MemberStatus, RoundInfo, RoundStatus
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR, initial_weights

ME, PEER = "0xMe", "0xPeer"
PEER_KEY = b"\x07" * 32
TASK = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")


@dataclass
class FakeLedger:
    initial: bytes
    merged: bytes = b"\0" * 32

    def binding(self) -> DeployParams:
        return DeployParams(b"\1" * 32, self.initial, 2, 4, 8)

    def members(self) -> list[Member]:
        return [Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE)]

    def site_names(self) -> dict[str, str]:
        return {PEER: "peer"}

    def round(self, r: int) -> RoundInfo:
        return RoundInfo(r, RoundStatus.FINALIZED, 1, PEER, (), (), b"", self.merged, (PEER,), 0, 1, 2, 3)


@dataclass
class FakePeers:
    """Transport.fetch_model: serves `models` after refusing the first `fail` requests."""

    models: dict[bytes, dict[str, torch.Tensor]] = field(default_factory=dict)
    fail: int = 0
    asked: int = 0

    def set_peers(self, peers: object, labels: object = None) -> None:
        pass

    async def announce(self, peer: bytes, *, round: int, model_hash: bytes) -> None:
        pass

    async def fetch_model(
        self, peer: bytes, model_hash: bytes, *, max_bytes: int, relay: object = None
    ) -> dict[str, torch.Tensor]:
        self.asked += 1
        if self.asked <= self.fail or model_hash not in self.models:
            raise TransportError("peer does not serve it")
        return {k: v.clone() for k, v in self.models[model_hash].items()}


@pytest.fixture(scope="module")
def initial() -> dict[str, torch.Tensor]:
    return initial_weights(TASK)


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_corrupt_initial_model_is_quarantined_and_rebuilt_from_the_task(
    tmp_path, initial, unit_driver
):
    h = content_hash(initial)
    _flip(ModelStore(tmp_path / "ckpt").path(ModelStore(tmp_path / "ckpt").put(initial)))
    d = unit_driver(
        ledger=FakeLedger(h), node=FakePeers(), address=ME, poll=0.1
    )  # restarted: nothing in memory
    model = await d.ensure_initial_model()
    assert content_hash(model) == h and content_hash(d.store.get(h, keep=False)) == h
    assert len(list((tmp_path / "ckpt" / QUARANTINE).iterdir())) == 1
    assert d.state.problems.current() == []
    (p,) = d.state.problems.repaired()
    assert p.kind == ProblemKind.CORRUPT_CHECKPOINT and "does not match its hash" in p.detail


async def test_an_initial_model_named_before_protocol_4_is_rebuilt_from_the_task(
    tmp_path, initial, unit_driver
):
    """A consortium deployed before the content hash became BLAKE3 has the v1 (sha256) hash of its initial
    model on chain: a site without it rebuilds it from the task, checks it by that name and stores it."""
    h = content_hash(initial, legacy=True)
    node = FakePeers()
    d = unit_driver(ledger=FakeLedger(h), node=node, address=ME, poll=0.1)
    model = await d.ensure_initial_model()
    assert content_hash(model, legacy=True) == h and node.asked == 0
    assert content_hash(d.store.get(h, keep=False), legacy=True) == h
    assert d.state.problems.current() == [] == d.state.problems.repaired()


async def test_an_initial_model_the_task_cannot_rebuild_is_fetched_from_a_peer_after_retries(
    tmp_path, unit_driver
):
    theirs = {"w": torch.arange(6.0)}  # not what this site's task builds: a version skew
    h = content_hash(theirs)
    node = FakePeers({h: theirs}, fail=1)
    d = unit_driver(ledger=FakeLedger(h), node=node, address=ME, poll=0.1)
    seen = []
    task = asyncio.ensure_future(d.ensure_initial_model())
    while not task.done():
        seen += [p.kind for p in d.state.problems.current()]
        await asyncio.sleep(0.05)
    assert content_hash(task.result()) == h and d.store.has(h) and node.asked == 2
    assert ProblemKind.INITIAL_MODEL in seen and d.state.problems.current() == []
    assert "hashes to" in d.state.problems.repaired()[0].detail


async def test_a_corrupt_merged_model_is_quarantined_and_fetched_again_from_a_peer(tmp_path, unit_driver):
    merged = {"w": torch.ones(5)}
    h = content_hash(merged)
    node = FakePeers({h: merged})
    d = unit_driver(ledger=FakeLedger(b"\2" * 32, merged=h), node=node, address=ME, poll=0.1)
    d.peers.update(d.ledger.members())
    ModelStore(tmp_path / "ckpt").put(merged)
    _flip(d.store.path(h))
    model = await d.ensure_model(h, 3)
    assert torch.equal(model["w"], merged["w"]) and node.asked == 1
    await d.gossip.durable(h)  # the fetched model is written behind the round's back
    assert content_hash(ModelStore(tmp_path / "ckpt").get(h)) == h  # the good bytes are on disk again
    assert [p.kind for p in d.state.problems.repaired()] == [ProblemKind.CORRUPT_CHECKPOINT]
    assert d.state.problems.current() == [] and d.journal.get(3).merged_hash == h
