"""A cyclic round's order and path (`swarmd.ledger.cyclic`), against a small reference written out here:
the order every site and auditor derive from the chain, how commits are checked against it, which
commit a finalize publishes, and the skip logic of the holder (`swarmd.daemon.cyclic.first_taker`)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from swarmd.cli.rounds_view import path_text
from swarmd.daemon.cyclic import first_taker, passed
from swarmd.ledger import CommitInfo, Outcome, RoundInfo, RoundStatus
from swarmd.ledger.cyclic import (
    finalized_path_problem,
    out_of_order,
    path_end,
    path_included,
    successors,
    visit_order,
)

SITES = [f"0x{i:040x}" for i in (0xA1, 0xB2, 0xC3, 0xD4, 0xE5)]
BASE = bytes(range(32))


def _reference_order(r: int, base: bytes, sites: list[str]) -> list[str]:
    """The order, spelled out: sha256 of the tag, the round as 32 big-endian bytes and the base hash is the
    seed; each site sorts by sha256(seed | its 20 address bytes)."""
    seed = hashlib.sha256(b"swarmd-cyclic-order" + r.to_bytes(32, "big") + base).digest()
    return sorted(sites, key=lambda a: hashlib.sha256(seed + bytes.fromhex(a[2:])).hexdigest())


def _round(commits: list[str], *, revealed: list[str] | None = None, r: int = 3, **kw: object) -> RoundInfo:
    entries = tuple(
        CommitInfo(a, hashlib.sha256(a.encode()).digest(), 8, 10 + i) for i, a in enumerate(commits)
    )
    return RoundInfo(
        r, RoundStatus.ELECTED, 1, None, entries, (), BASE, None, (), 0, 10, None, None,
        revealed=tuple(commits if revealed is None else revealed), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_order_is_the_reference_and_depends_on_round_and_base() -> None:
    order = visit_order(3, BASE, SITES)
    assert order == _reference_order(3, BASE, SITES)
    loud = [a.upper().replace("0X", "0x") for a in SITES]  # a checksummed spelling sorts alike
    assert visit_order(3, BASE, loud) == [a.upper().replace("0X", "0x") for a in order]
    others = {tuple(visit_order(r, b, SITES)) for r in range(4) for b in (BASE, bytes(32), b"\xff" * 32)}
    assert len(others) > 6  # the draw moves with the round and the model it starts from


@given(st.lists(st.sampled_from(SITES), unique=True, min_size=1), st.integers(0, 1000))
def test_any_subset_keeps_its_relative_order(subset: list[str], r: int) -> None:
    """An auditor who does not know the membership checks the commits against the order all the same."""
    full = visit_order(r, BASE, SITES)
    assert visit_order(r, BASE, subset) == [a for a in full if a in subset]


def test_successors_are_the_sites_after_us_in_order() -> None:
    order = visit_order(0, BASE, SITES)
    assert successors(order, order[1]) == order[2:]
    assert successors(order, order[-1]) == [] and successors(order, "0x" + "9" * 40) == []
    assert successors(order, order[0].upper().replace("0X", "0x")) == order[1:]


def test_the_holder_skips_the_sites_that_do_not_take_the_model() -> None:
    order = visit_order(1, BASE, SITES)
    dead = {order[1], order[2]}
    tried: list[str] = []

    async def offer(site: str) -> bool:
        tried.append(site)
        return site not in dead

    taker, skipped = asyncio.run(first_taker(successors(order, order[0]), offer))
    # reference: the first live site after the holder takes it; each dead one before it was tried once
    assert taker == order[3] and skipped == [order[1], order[2]] and tried == order[1:4]
    everyone_dead = asyncio.run(first_taker(order[1:], lambda s: asyncio.sleep(0, False)))
    assert everyone_dead == (None, order[1:])


def test_commits_out_of_the_drawn_order_are_named_and_a_passed_site_knows() -> None:
    order = visit_order(3, BASE, SITES)
    skipping = _round([order[0], order[2], order[4]])
    assert out_of_order(skipping) == []  # skipping sites keeps the order
    assert out_of_order(_round([order[2], order[0], order[4]])) == [order[0]]
    assert passed(order, order[1], skipping) and not passed(order, order[4], _round([order[0]]))


def test_the_finalize_publishes_the_last_revealed_commit_it_can_get() -> None:
    order = visit_order(3, BASE, SITES)
    info = _round(order[:4], revealed=[order[0], order[1], order[2]])  # order[3] died before revealing
    assert path_end(info, obtainable=order) == 2
    assert path_end(info, obtainable=[order[0], order[1]]) == 1  # order[2] is down: its model is gone
    assert path_end(info, obtainable=[]) is None
    assert path_included(info, 1) == [order[0], order[1]]


def _finalized(commits: list[str], outcomes: list[Outcome], end: int) -> RoundInfo:
    info = _round(commits, outcomes=tuple(outcomes))
    return dataclasses.replace(info, status=RoundStatus.FINALIZED, merged_hash=info.commits[end].update_hash)


def test_a_finalized_path_is_checked_against_its_record() -> None:
    order = visit_order(3, BASE, SITES)
    inc, nd = Outcome.INCLUDED, Outcome.NOT_DELIVERED
    assert finalized_path_problem(_finalized(order[:3], [inc, inc, nd], 1)) == ""
    assert "not the model of the path's last" in finalized_path_problem(
        _finalized(order[:3], [inc, inc, inc], 1)
    )
    assert "marked excluded" in finalized_path_problem(_finalized(order[:3], [inc, nd, inc], 2))
    assert "do not follow the drawn order" in finalized_path_problem(
        _finalized([order[1], order[0]], [inc, inc], 1)
    )


def test_the_ledger_cli_shows_the_path_and_the_skipped_sites() -> None:
    order = visit_order(3, BASE, SITES)
    names = {a.lower(): f"site-{i}" for i, a in enumerate(SITES)}
    text = path_text(_round([order[0], order[2]]), SITES, names)
    label = [names[a.lower()] for a in order]
    assert (
        text == f"path: {label[0]} -> ({label[1]} skipped) -> {label[2]}; not reached: {', '.join(label[3:])}"
    )
