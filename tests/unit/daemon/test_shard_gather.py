"""A sharded committer's all-gather (`ShardSide.gather`): it starts on the owners' word (`merged`), before
the leader's final plan, once its own leaves are merged; the final plan's hashes then decide, so a word
the plan contradicts costs those leaves again, and the model assembled is the plan's. The `merged` word
itself is answered `noted` by a committer, refused when it names leaves the sender does not own."""

from __future__ import annotations

import asyncio

import torch

from swarmd.codec import content_hash
from swarmd.daemon.shardwork import ShardWork
from swarmd.ledger import Member, MemberStatus
from swarmd.merge import FedAvg, Update
from swarmd.merge.shards import ShardLayout
from swarmd.transport import Refusal, SecAggHeader, SecAggTopic, Verdict
from swarmd.transport.shards import Merged, Noted, Plan, decode_shard_msg

A, B, C = ("0x" + c * 40 for c in "abc")
LEAVES = 6


def model(seed: float) -> dict[str, torch.Tensor]:
    return {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4) + seed, "b": torch.full((5,), seed)}


def setup(unit_driver):
    d = unit_driver(address=A)
    d.peers.update(
        [Member(a, bytes([i + 2]) * 32, f"tcp://{a}", MemberStatus.ACTIVE) for i, a in enumerate((B, C))]
    )
    updates = {A: model(1.0), B: model(2.0), C: model(3.0)}
    committed = {a: (ShardLayout(u, LEAVES).root(u), 10) for a, u in updates.items()}
    work = ShardWork(0, 1, A, A, model(0.0), updates[A], committed, is_diff=False, leaves=LEAVES)
    owners = (A, A, B, B, C, C)
    work.adopt(Plan(0, 1, 0, owners))
    for sender in (B, C):
        for i in work.mine():
            work.check_piece(sender, i, work.layout.leaf(updates[sender], i))
    for i in work.to_merge():
        work.merge(i, FedAvg)
    whole = FedAvg()
    whole.begin(model(0.0))
    for a in (A, B, C):
        whole.add(Update(a, updates[a], 10))
    merged = whole.result()
    return d, work, owners, merged


async def test_the_gather_starts_on_the_owners_word_and_ends_on_the_final_plans_hashes(unit_driver):
    d, work, owners, merged = setup(unit_driver)
    leaves = {content_hash(leaf): leaf for leaf in work.layout.leaves(merged)}
    right = [content_hash(leaf) for leaf in work.layout.leaves(merged)]
    wrong = {i: content_hash(leaf) for i, leaf in enumerate(work.layout.leaves(model(9.0)))}
    leaves.update({wrong[i]: work.layout.leaf(model(9.0), i) for i in (4, 5)})
    fetched: list[tuple[bytes, bool]] = []  # (hash, was the plan final)

    async def fetch_leaf(peer, h):
        fetched.append((h, work.plan is not None and work.plan.merged is not None))
        return leaves[h]

    d.fetch_leaf = fetch_leaf
    work.offer(B, (A, B, C), {2: right[2], 3: right[3]})
    work.offer(C, (A, B, C), {4: wrong[4], 5: wrong[5]})  # C's word, which its merge will not bear out
    gather = asyncio.ensure_future(d.gather(work))
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert sorted(fetched) == sorted((h, False) for h in (right[2], right[3], wrong[4], wrong[5]))
    assert not gather.done()  # no final plan yet
    work.adopt(Plan(0, 1, 1, owners, include=(A, B, C), merged=tuple(right)))
    d.wake()
    await asyncio.wait_for(gather, 5)
    assert work.gathered == content_hash(merged)
    assert sorted(h for h, final in fetched if final) == sorted([right[4], right[5]])  # B's not again


async def test_a_committer_takes_an_owners_word_only_on_leaves_it_owns(unit_driver):
    d, work, _, _ = setup(unit_driver)
    d._shards = work
    header = SecAggHeader(0, SecAggTopic.SHARDS)
    key_b = d.peers.key(B)
    good = Merged(0, (A, B, C), {2: bytes(32)})
    answer = await d.on_secagg(key_b, header, good.encode())
    assert isinstance(answer, bytes) and decode_shard_msg(answer) == Noted(0)
    assert work.offers[B] == ((A, B, C), {2: bytes(32)})
    refused = await d.on_secagg(key_b, header, Merged(0, (A, B, C), {4: bytes(32)}).encode())
    assert isinstance(refused, Verdict) and refused.reason == Refusal.INVALID
    assert work.offers[B] == ((A, B, C), {2: bytes(32)})  # the refused word changed nothing
