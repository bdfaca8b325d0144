"""Rounds through the Python client against a real anvil: full round, reelection, abandonment, and
every guard asserted by its Solidity error name and arguments."""

from __future__ import annotations

from dataclasses import replace

import pytest
from chainkit import Consortium, commit, deploy_consortium, elect, finalize, h32, outcomes, reveal_all
from eth_account.signers.local import LocalAccount

from swarmd.ledger import DeployParams, Devnet, Ledger, Outcome, RoundStatus, errors

pytestmark = pytest.mark.chain


def _commit_all(c: Consortium, r: int, sites=None) -> None:
    for i, site in enumerate(sites if sites is not None else c.sites):
        commit(site, r, h32(f"update-{r}-{i}"), 10 + i)


def test_full_round_through_the_client(consortium: Consortium) -> None:
    c = consortium
    assert c.admin.current_round() == 0
    assert c.admin.round(0).base_hash == c.params.initial_model_hash
    _commit_all(c, 0)
    reveal_all(c, 0)
    assert c.admin.can_elect(0)
    c.admin.elect(0)

    info = c.admin.round(0)
    assert info.status is RoundStatus.ELECTED and info.term == 1
    assert info.leader in info.committers
    assert [x.n_samples for x in info.commits] == [10, 11, 12]
    assert [x.update_hash for x in info.commits] == [h32(f"update-0-{i}") for i in range(3)]

    included = [s.sender for s in c.sites[:2]]
    finalize(c, 0, h32("merged-0"), included)

    done = c.admin.round(0)
    assert done.status is RoundStatus.FINALIZED
    assert done.merged_hash == h32("merged-0")
    assert list(done.included) == included
    assert done.finalized_block is not None and done.finalized_block > done.elected_block  # type: ignore[operator]
    doc = done.to_json()
    assert doc["leader"] == info.leader and doc["term"] == 1 and doc["status"] == "finalized"
    assert [x["n_samples"] for x in doc["commits"]] == [10, 11, 12]
    assert doc["merged_hash"] == "0x" + h32("merged-0").hex()

    assert c.admin.current_round() == 1
    nxt = c.admin.round(1)
    assert nxt.status is RoundStatus.OPEN and nxt.base_hash == h32("merged-0")
    assert nxt.opened_block == done.finalized_block
    assert [r.round for r in c.admin.rounds()] == [0, 1]


def test_commit_guards(consortium: Consortium) -> None:
    c = consortium
    a, b = c.sites[0], c.sites[1]
    outsider = c.outsiders[0]
    with pytest.raises(errors.NotActiveMember) as exc:
        commit(outsider, 0, h32("x"), 1)
    assert exc.value.error_args == (outsider.sender,)
    with pytest.raises(errors.WrongRound) as exc:
        commit(a, 1, h32("x"), 1)
    assert exc.value.error_args == (1, 0)
    with pytest.raises(errors.ZeroHash):
        commit(a, 0, b"\0" * 32, 1)
    with pytest.raises(errors.ZeroSamples):
        commit(a, 0, h32("x"), 0)
    commit(a, 0, h32("x"), 5)
    with pytest.raises(errors.AlreadyCommitted) as exc:
        commit(a, 0, h32("y"), 5)
    assert exc.value.error_args == (0, a.sender)
    assert c.admin.has_committed(0, a.sender) and not c.admin.has_committed(0, b.sender)

    # One commit is below minPeers = 2.
    assert not c.admin.can_elect(0)
    with pytest.raises(errors.NotEnoughCommits) as exc:
        c.admin.elect(0)
    assert exc.value.error_args == (0, 1, 2)
    commit(b, 0, h32("z"), 5)
    # 2 of 3 active members: the window (5 blocks from the first commit) is still open.
    first = c.admin.round(0).first_commit_block
    with pytest.raises(errors.CommitWindowOpen) as exc:
        c.admin.elect(0)
    assert exc.value.error_args == (0, first + 5)  # type: ignore[operator]
    c.mine(3)
    reveal_all(c, 0)
    assert c.admin.can_elect(0)
    c.admin.elect(0)
    with pytest.raises(errors.RoundNotOpen) as exc:
        commit(c.sites[2], 0, h32("late"), 5)
    assert exc.value.error_args == (0, RoundStatus.ELECTED)
    with pytest.raises(errors.RoundNotOpen):
        c.admin.elect(0)


def test_finalize_guards(consortium: Consortium) -> None:
    c = consortium
    with pytest.raises(errors.NotElected) as exc:
        c.sites[0].finalize(0, h32("m"), {})
    assert exc.value.error_args == (0, RoundStatus.OPEN)
    _commit_all(c, 0, c.sites[:2])
    c.mine(5)
    elect(c, 0)
    leader = c.admin.round(0).leader
    other = next(s for s in c.sites[:2] if s.sender != leader)
    good = outcomes(c, 0)
    with pytest.raises(errors.NotLeader) as exc:
        other.finalize(0, h32("m"), good)
    assert exc.value.error_args == (0, other.sender, leader)
    me = c.site(leader)  # type: ignore[arg-type]
    with pytest.raises(errors.NothingIncluded):
        me.finalize(0, h32("m"), dict.fromkeys(good, Outcome.FAILED_VALIDATION))
    with pytest.raises(errors.ZeroHash):
        me.finalize(0, b"\0" * 32, good)
    with pytest.raises(errors.WrongRound):
        me._send("finalize", 1, h32("m"), bytes(2))
    me.finalize(0, h32("m"), good)
    with pytest.raises(errors.WrongRound):
        me._send("finalize", 0, h32("m2"), bytes(2))
    assert c.admin.round(0).merged_hash == h32("m")


def test_reelect_excludes_failed_leader_then_finalizes(consortium: Consortium) -> None:
    c = consortium
    _commit_all(c, 0)
    elect(c, 0)
    first = c.admin.round(0)
    assert not c.admin.can_reelect(0)
    with pytest.raises(errors.LeaderTimeoutNotReached) as exc:
        c.admin.reelect(0)
    assert exc.value.error_args == (0, first.elected_block + 5 + 1)  # type: ignore[operator]
    c.mine(5)
    assert c.admin.can_reelect(0)
    c.sites[0].reelect(0)  # anyone may call it, a committer here

    second = c.admin.round(0)
    assert second.status is RoundStatus.ELECTED and second.term == 2
    assert second.failed_leaders == (first.leader,)
    assert second.leader not in (None, first.leader)
    with pytest.raises(errors.NotLeader):
        c.site(first.leader).finalize(0, h32("m"), outcomes(c, 0))  # type: ignore[arg-type]
    finalize(c, 0, h32("m"))
    assert c.admin.round(0).status is RoundStatus.FINALIZED
    assert c.admin.round(0).term == 2


def test_every_leader_fails_round_is_abandoned(consortium: Consortium) -> None:
    c = consortium
    _commit_all(c, 0, c.sites[:2])
    c.mine(5)
    elect(c, 0)
    leaders = [c.admin.round(0).leader]
    for _ in range(2):
        c.mine(5)
        c.admin.reelect(0)
        leaders.append(c.admin.round(0).leader)
    info = c.admin.round(0)
    assert info.status is RoundStatus.ABANDONED and info.leader is None
    assert set(info.failed_leaders) == set(info.committers) == set(leaders[:2])
    assert info.abandoned_block is not None and info.finalized_block is None and info.merged_hash is None
    assert c.admin.current_round() == 1
    # The next round starts from the model round 0 started from.
    assert c.admin.round(1).base_hash == c.params.initial_model_hash
    events = [e.name for e in c.admin.events().poll()]
    assert events.count("LeaderFailed") == 2 and "RoundAbandoned" in events


def test_removed_committer_is_never_drawn(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=3, min_peers=2)
    _commit_all(c, 0)
    c.admin.remove(c.sites[0].sender)
    elect(c, 0)  # the removed site may still reveal; it is not drawn
    assert c.admin.round(0).leader != c.sites[0].sender
    # The removed site's commit stays on the record, and it can no longer commit.
    assert c.admin.round(0).commits[0].site == c.sites[0].sender


def test_unknown_round_views(consortium: Consortium) -> None:
    with pytest.raises(errors.UnknownRound) as exc:
        consortium.admin.round(3)
    assert exc.value.error_args == (3, 0)
    assert not consortium.admin.can_elect(3)
    assert not consortium.admin.can_reelect(0)


def test_deploy_rejects_bad_bindings(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    good = DeployParams(h32("t"), h32("i"), 2, 5, 5)
    for bad, field in [
        (replace(good, min_peers=0), "minPeers"),
        (replace(good, min_peers=257), "minPeers"),
        (replace(good, leader_timeout=0), "leaderTimeout"),
        (replace(good, reveal_window=0), "revealWindow"),
        (replace(good, task_hash=b"\0" * 32), "taskHash"),
    ]:
        with pytest.raises(errors.InvalidBinding) as exc:
            Ledger.deploy(devnet.rpc_url, accounts[0], bad)
        assert exc.value.error_args == (field,)


def test_has_committed_answers_for_past_rounds(consortium: Consortium) -> None:
    c = consortium
    for r in range(2):
        _commit_all(c, r)
        elect(c, r)
        finalize(c, r, h32(f"m{r}"))
    assert all(c.admin.has_committed(r, s.sender) for r in (0, 1) for s in c.sites)  # type: ignore[arg-type]
    assert not c.admin.has_committed(2, c.sites[0].sender)  # type: ignore[arg-type]
    assert c.admin.base_hash(2) == h32("m1") and c.admin.base_hash(1) == h32("m0")
