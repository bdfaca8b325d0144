"""A committer's part in a sharded round (`ShardWork`): a leaf list that is not the sender's committed
root, or a leaf that fails validation, refuses the sender with the accounting label; a leaf is merged
once every piece is here, before the leader decides (the guess is reported only once it is the
decision); the status says what is held, refused and merged."""

from __future__ import annotations

import torch

from swarmd.codec import content_hash
from swarmd.daemon.shardplan import opening_plan
from swarmd.daemon.shardwork import ShardWork
from swarmd.merge import FedAvg, Update
from swarmd.merge.shards import ShardLayout
from swarmd.task import SHARD_LEAVES
from swarmd.transport.shards import Plan

A, B, C = ("0x" + c * 40 for c in "abc")


def model(seed: float) -> dict[str, torch.Tensor]:
    return {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4) + seed, "b": torch.full((5,), seed)}


def work_of(me: str) -> tuple[ShardWork, dict[str, dict[str, torch.Tensor]]]:
    updates = {A: model(1.0), B: model(2.0), C: model(3.0)}
    committed = {a: (ShardLayout(u).root(u), 10 * (i + 1)) for i, (a, u) in enumerate(updates.items())}
    work = ShardWork(0, 1, me, A, model(0.0), updates[me], committed, is_diff=False, leaves=SHARD_LEAVES)
    return work, updates


def test_a_leaf_list_must_hash_to_the_committed_root() -> None:
    work, updates = work_of(A)
    layout = ShardLayout(updates[B])
    assert work.check_list(B, tuple(layout.hashes(updates[B])))
    wrong = tuple(layout.hashes(updates[B]))  # B's list offered as C's
    assert not work.check_list(C, wrong) and work.failed == {C: "hash_mismatch"}


def test_a_leaf_with_a_nan_or_the_wrong_structure_refuses_its_sender() -> None:
    work, updates = work_of(A)
    work.adopt(Plan(0, 1, 0, (A,) * work.layout.count))
    piece = work.layout.leaf(updates[B], 0)
    bad = {k: v.clone() for k, v in piece.items()}
    next(iter(bad.values()))[0] = float("nan")
    assert work.check_piece(B, 0, piece) and B in work.pieces[0]
    assert not work.check_piece(C, 0, bad) and work.failed[C] == "nonfinite"
    assert not work.check_piece(B, 1, {"x": torch.zeros(1)}) and work.failed[B] == "names"


def test_an_owner_merges_its_leaves_once_every_included_piece_is_here() -> None:
    work, updates = work_of(B)
    layout = work.layout
    owners = (A,) * (layout.count // 2) + (B,) * (layout.count - layout.count // 2)
    work.adopt(Plan(0, 1, 0, owners))
    mine = work.mine()
    assert mine and work.missing(A) == mine and work.missing(B) == []
    for sender in (A, C):
        for i in mine:
            work.check_piece(sender, i, layout.leaf(updates[sender], i))
    assert work.to_merge() == mine  # before the decision: merged over every committer not refused
    for i in mine:
        work.merge(i, FedAvg)
    assert work.to_merge() == [] and work.status().merged == {}  # a guess is never reported
    assert work.adopt(Plan(0, 1, 1, owners, include=(A, B, C))) and not work.adopt(Plan(0, 1, 1, owners))
    assert work.to_merge() == []  # the guess was right: nothing left to merge
    whole = FedAvg()
    whole.begin(model(0.0))
    for i, a in enumerate((A, B, C)):
        whole.add(Update(a, updates[a], 10 * (i + 1)))
    merged = whole.result()
    status = work.status()
    assert set(status.held) == {A, B, C} and status.epoch == 1 and not status.failed
    assert status.merged == {i: content_hash(layout.leaf(merged, i)) for i in mine}


def test_a_wrong_guess_is_merged_again_over_the_decided_include() -> None:
    work, updates = work_of(A)
    owners = (A,) * work.layout.count
    work.adopt(Plan(0, 1, 0, owners))
    for sender in (B, C):
        for i in work.mine():
            work.check_piece(sender, i, work.layout.leaf(updates[sender], i))
    for i in work.to_merge():
        work.merge(i, FedAvg)
    work.adopt(Plan(0, 1, 1, owners, include=(A, B)))  # C was refused by another owner
    assert work.to_merge() == work.mine()
    for i in work.to_merge():
        work.merge(i, FedAvg)
    assert set(work.status().merged) == set(work.mine()) and work.to_merge() == []


def test_the_work_opened_before_the_election_goes_on_under_the_elected_term() -> None:
    work, updates = work_of(B)
    early = ShardWork(
        0, -1, B, "", model(0.0), updates[B], work.committed, is_diff=False, leaves=SHARD_LEAVES
    )
    early.adopt(opening_plan(0, -1, list(early.committed), early.layout.count))
    assert early.opened_early(0, work.committed) and not early.opened_early(1, work.committed)
    assert not early.opened_early(0, {a: v for a, v in work.committed.items() if a != C})  # C kept quiet
    assert not work.opened_early(0, work.committed)  # an elected term's work
    for i in early.mine():
        early.check_piece(A, i, early.layout.leaf(updates[A], i))
    early.retarget(1, A)
    assert early.plan is None and (early.term, early.leader) == (1, A)
    assert early.adopt(opening_plan(0, 1, list(early.committed), early.layout.count))
    assert early.missing(A) == [] and early.missing(C) == early.mine()  # A's pieces were kept


def test_a_later_work_keeps_the_pieces_lists_and_refusals_of_the_updates_still_committed() -> None:
    work, updates = work_of(B)
    owners = (B,) * work.layout.count
    work.adopt(Plan(0, 1, 0, owners))
    for sender in (A, C):
        work.check_list(sender, tuple(work.layout.hashes(updates[sender])))
        work.check_piece(sender, 0, work.layout.leaf(updates[sender], 0))
    work.failed[C] = "nonfinite"
    work.merge(0, FedAvg)
    only_ab = {a: v for a, v in work.committed.items() if a != C}  # C did not reveal in the next term
    later = ShardWork(0, 2, B, A, model(0.0), updates[B], only_ab, is_diff=False, leaves=SHARD_LEAVES)
    later.inherit(work)
    assert set(later.lists) == {A} and later.failed == {}
    assert set(later.pieces[0]) == {A, B}  # C's piece went with C
    assert later.merged == work.merged  # each merge names its include: a different one is merged again
    later.adopt(Plan(0, 2, 0, owners))
    assert later.missing(A) == [i for i in later.mine() if i != 0]


def test_the_leaf_hashes_made_for_the_commit_are_used_not_made_again(monkeypatch) -> None:
    work, updates = work_of(A)
    made = ShardLayout(updates[A]).hashes(updates[A])
    assert work.own_hashes == made

    def hashes(self: ShardLayout, state: object) -> list[bytes]:
        raise AssertionError("hashed our update again")

    def remade(own_hashes: list[bytes]) -> ShardWork:
        args = (0, 1, A, A, model(0.0), updates[A], work.committed, False, SHARD_LEAVES)
        return ShardWork(*args, own_hashes=own_hashes)

    monkeypatch.setattr(ShardLayout, "hashes", hashes)
    again = remade(made)
    assert again.own_hashes == made and set(again.own_leaves()) == set(made)
    monkeypatch.undo()
    short = remade(made[:1])
    assert short.own_hashes == made  # a list that is not the layout's: made again
