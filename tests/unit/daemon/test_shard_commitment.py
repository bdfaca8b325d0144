"""A sharded site's commitment is the Merkle root over the task's `[exchange] leaves`, and its round's
work cuts models the same way (the whole round, with a leaf count of its own, runs in
tests/e2e/test_sharded_swarm.py)."""

from __future__ import annotations

import dataclasses

import torch

from swarmd.codec import Digest
from swarmd.daemon.shardwork import ShardWork
from swarmd.merge.shards import ShardLayout
from swarmd.task import SHARD_LEAVES, load_task
from swarmd.train import BUNDLES_DIR


async def test_the_commitment_and_the_work_cut_the_model_into_the_tasks_leaves(unit_driver) -> None:
    task = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")
    sharded = dataclasses.replace(task.exchange, topology="sharded", leaves=5)
    task = dataclasses.replace(task, exchange=sharded)
    d = unit_driver(task=task)
    update = {"w": torch.linspace(-1, 1, 103), "b": torch.arange(11.0)}
    h = Digest(d.store.put(update))
    root = await d.commitment(h)
    assert root == ShardLayout(update, 5).root(update)
    assert root != ShardLayout(update, SHARD_LEAVES).root(update)
    d.journal.update(0, update_hash=h)
    work = await d.open_work(0, -1, "", update, {d.me: (root, 10)})
    assert isinstance(work, ShardWork) and work.layout.count == 5 and len(work.own_hashes) == 5


async def test_a_stored_update_has_its_leaves_hashed_beside_it_and_the_commit_reuses_them(
    unit_driver,
) -> None:
    task = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")
    task = dataclasses.replace(
        task, exchange=dataclasses.replace(task.exchange, topology="sharded", leaves=5)
    )
    d = unit_driver(task=task)
    update = {"w": torch.linspace(-1, 1, 103), "b": torch.arange(11.0)}
    h = await d.store_update(update)
    assert d.store.has(h) and d._leaf_hashes == (h, ShardLayout(update, 5).hashes(update))
    d.store.get = None  # the commitment reads nothing back: the hashes made beside the write are used
    assert await d.commitment(h) == ShardLayout(update, 5).root(update)


async def test_a_leader_topology_update_is_only_stored(unit_driver) -> None:
    d = unit_driver(task=load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml"))
    h = await d.store_update({"w": torch.ones(4)})
    assert d.store.has(h) and d._leaf_hashes is None and await d.commitment(h) == h
