"""The leader's plan of a sharded round (`Coordinator`): decided once every owner holds every update,
final once every merged leaf is known; a silent owner is declared dead, excluded NOT_DELIVERED and its
leaves handed on; a sender an owner refuses is excluded with the owner's reason (HASH_MISMATCH)."""

from __future__ import annotations

from swarmd.daemon.accounting import exclusion_reason
from swarmd.daemon.shardplan import DEAD_AFTER, Coordinator, opening_plan
from swarmd.ledger import Outcome
from swarmd.transport.shards import Status

A, B, C = ("0x" + c * 40 for c in "abc")
LEAVES = 6


def h(i: int) -> bytes:
    return bytes([i]) * 32


def statuses(coord: Coordinator, held: list[str], *, failed=None, merged: bool = False, skip=()) -> dict:
    p = coord.plan
    out = {}
    for site in coord.live - set(skip):
        done = {i: h(i) for i in p.leaves_of(site)} if merged else {}
        out[site] = Status(p.round, p.term, p.epoch, tuple(held), dict(failed or {}), done)
    return out


def test_all_alive_the_plan_is_decided_then_final() -> None:
    coord = Coordinator(4, 1, [C, A, B], LEAVES, A, now=0.0)
    assert coord.plan.owners == (A, A, B, B, C, C) and coord.plan.include is None
    coord.observe(statuses(coord, [A, B]), now=0.1)  # C's leaves not held everywhere yet
    assert coord.plan.include is None
    coord.observe(statuses(coord, [A, B, C]), now=0.2)
    assert coord.plan.include == (A, B, C) and coord.plan.epoch == 1 and not coord.final
    coord.observe(statuses(coord, [A, B, C], merged=True), now=0.3)
    assert coord.final and coord.plan.merged == tuple(h(i) for i in range(LEAVES)) and not coord.excluded


def test_every_committer_computes_the_leaders_opening_plan_from_the_committers_alone() -> None:
    for order in ([C, A, B], [B, C, A], [A, B, C]):
        leader_view = Coordinator(4, 2, order, LEAVES, B, now=0.0).plan
        assert opening_plan(4, 2, list(reversed(order)), LEAVES) == leader_view
    assert opening_plan(4, 2, [A, B], LEAVES) != opening_plan(4, 2, [A, B, C], LEAVES)


def test_a_silent_owner_is_dead_after_a_while_and_its_leaves_move() -> None:
    coord = Coordinator(4, 1, [A, B, C], LEAVES, A, now=0.0)
    coord.observe(statuses(coord, [A, B], skip=[C]), now=DEAD_AFTER / 2)
    assert C in coord.live  # not yet
    coord.observe(statuses(coord, [A, B], skip=[C]), now=DEAD_AFTER + 0.1)
    assert C not in coord.live and coord.excluded == {C: "not_delivered"}
    assert C not in coord.plan.owners and coord.plan.owners == (A, A, B, B, A, B)
    coord.observe(statuses(coord, [A, B]), now=DEAD_AFTER + 0.2)
    assert coord.plan.include == (A, B)
    coord.observe(statuses(coord, [A, B], merged=True), now=DEAD_AFTER + 0.3)
    assert coord.final and exclusion_reason(coord.excluded[C]) == Outcome.NOT_DELIVERED


def test_the_leader_itself_is_never_buried() -> None:
    coord = Coordinator(4, 1, [A, B], LEAVES, A, now=0.0)
    coord.observe({}, now=DEAD_AFTER * 3)
    assert coord.live == {A}  # B is, A is not


def test_an_owner_that_dies_after_the_decision_undoes_it() -> None:
    coord = Coordinator(4, 1, [A, B, C], LEAVES, A, now=0.0)
    coord.observe(statuses(coord, [A, B, C]), now=0.1)
    assert coord.plan.include == (A, B, C)
    coord.observe(statuses(coord, [A, B, C], skip=[B]), now=DEAD_AFTER + 1)
    assert coord.plan.include is None and coord.excluded == {B: "not_delivered"}
    coord.observe(statuses(coord, [A, B, C]), now=DEAD_AFTER + 1.1)
    assert coord.plan.include == (A, C)


def test_a_refused_sender_is_excluded_with_the_owners_reason() -> None:
    coord = Coordinator(4, 1, [A, B, C], LEAVES, A, now=0.0)
    coord.observe(statuses(coord, [A, B], failed={C: "hash_mismatch"}), now=0.1)
    assert coord.plan.include == (A, B)
    assert exclusion_reason(coord.excluded[C]) == Outcome.HASH_MISMATCH
    coord = Coordinator(4, 1, [A, B, C], LEAVES, A, now=0.0)
    coord.observe(statuses(coord, [A, B], failed={C: "nonfinite"}), now=0.1)
    assert exclusion_reason(coord.excluded[C]) == Outcome.FAILED_VALIDATION


def test_at_the_deadline_what_every_owner_holds_is_merged() -> None:
    coord = Coordinator(4, 1, [A, B, C], LEAVES, A, now=0.0)
    answers = statuses(coord, [A, B, C])
    answers[B] = Status(4, 1, 0, (A, B), {}, {})  # B never got C's leaves
    coord.observe(answers, now=0.1)
    assert coord.plan.include is None
    coord.observe(answers, now=0.2, deadline=True)
    assert coord.plan.include == (A, B) and coord.excluded == {C: "not_delivered"}
