"""The audit of a sharded round, whose commitments are Merkle roots of leaves, not content hashes: the
auditor's own update is found through its journal (the `own_updates` map), every other through the
committer's answer; each is held to its committed root. Chain faked; the network path runs in
tests/e2e/test_sharded_swarm.py."""

from __future__ import annotations

import torch
import zmq

from swarmd.audit import Status, UpdateSource, audit_round
from swarmd.checkpoint import CheckpointStore
from swarmd.codec import content_hash
from swarmd.ledger import CommitInfo, RoundInfo, RoundStatus
from swarmd.merge.shards import ShardLayout
from swarmd.task import SHARD_LEAVES, SwarmSettings

A, B = "0x" + "a" * 40, "0x" + "b" * 40
R = 2


def _model(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.linspace(-1, 1, 300) * v, "b": torch.full((7,), v)}


def _root(state: dict[str, torch.Tensor], leaves: int = SHARD_LEAVES) -> bytes:
    return ShardLayout(state, leaves).root(state)


def _round(
    store: CheckpointStore, committers: dict[str, dict[str, torch.Tensor]], leaves: int = SHARD_LEAVES
) -> RoundInfo:
    commits = tuple(CommitInfo(site, _root(up, leaves), 10, block=1) for site, up in committers.items())
    merged = next(iter(committers.values())) if len(committers) == 1 else _model(9.0)  # fedavg of one
    return RoundInfo(
        round=R, status=RoundStatus.FINALIZED, term=0, leader=A, commits=commits, failed_leaders=(),
        base_hash=store.put(_model(1.0)), merged_hash=content_hash(merged),
        included=tuple(committers), opened_block=0, first_commit_block=1, elected_block=2, finalized_block=3,
    )  # fmt: skip


async def _audit(store: CheckpointStore, info: RoundInfo, own: dict[int, bytes], leaves: int = SHARD_LEAVES):
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=store.root, me=A, curve_public=public, curve_secret=secret, members=[], max_bytes=1 << 20,
        own_updates=own, shard_leaves=leaves,
    )  # fmt: skip
    async with source:
        return await audit_round(info, SwarmSettings(), source, sharded=True)


async def test_a_sharded_round_is_recomputed_from_the_update_its_root_names(tmp_path):
    store = CheckpointStore(tmp_path)
    mine = _model(1.5)
    verdict = await _audit(store, _round(store, {A: mine}), {R: store.put(mine)})
    assert verdict.status is Status.VERIFIED and verdict.sources == {A: "local"}


async def test_the_root_is_checked_over_the_tasks_leaf_count(tmp_path):
    store = CheckpointStore(tmp_path)
    mine = _model(1.5)
    info = _round(store, {A: mine}, leaves=5)  # a task with `[exchange] leaves = 5`
    verdict = await _audit(store, info, {R: store.put(mine)}, leaves=5)
    assert verdict.status is Status.VERIFIED
    # an auditor cutting otherwise finds the root names something else: the count is part of the root
    other = await _audit(store, info, {R: store.put(mine)}, leaves=SHARD_LEAVES)
    assert other.status is Status.CANNOT_AUDIT and "is not what its committed root names" in other.reason


async def test_an_update_that_is_not_the_committed_root_cannot_be_audited(tmp_path):
    store = CheckpointStore(tmp_path)
    info = _round(store, {A: _model(1.5)})
    other = store.put(_model(1.6))  # the journal names another update than the one the root commits to
    verdict = await _audit(store, info, {R: other})
    assert verdict.status is Status.CANNOT_AUDIT and "is not what its committed root names" in verdict.reason
    none = await _audit(store, info, {})
    assert none.status is Status.CANNOT_AUDIT and "journal names no committed update" in none.reason


async def test_a_committer_nobody_can_ask_cannot_be_audited(tmp_path):
    store = CheckpointStore(tmp_path)
    mine = _model(1.5)
    info = _round(store, {A: mine, B: _model(0.5)})
    verdict = await _audit(store, info, {R: store.put(mine)})
    assert verdict.status is Status.CANNOT_AUDIT
    assert f"no one names the update {B} committed in round {R}" in verdict.reason


async def test_a_round_finalized_before_protocol_4_is_held_to_its_v1_names(tmp_path):
    """Before the content hash became BLAKE3, a round named its base, its updates' leaves and its merged
    model by v1 (sha256) hashes, and the chain keeps those names: an auditor checks each by them."""
    store = CheckpointStore(tmp_path)
    base, mine = _model(1.0), _model(1.5)
    base_v1, mine_v1 = (content_hash(s, legacy=True) for s in (base, mine))
    root = ShardLayout(mine, SHARD_LEAVES).root(mine, legacy=True)
    assert root != _root(mine)
    info = RoundInfo(
        round=R, status=RoundStatus.FINALIZED, term=0, leader=A, commits=(CommitInfo(A, root, 10, block=1),),
        failed_leaders=(), base_hash=store.put(base, base_v1), merged_hash=mine_v1, included=(A,),
        opened_block=0, first_commit_block=1, elected_block=2, finalized_block=3,
    )  # fmt: skip
    verdict = await _audit(store, info, {R: store.put(mine, mine_v1)})
    assert verdict.status is Status.VERIFIED and verdict.recomputed == mine_v1, verdict.reason
