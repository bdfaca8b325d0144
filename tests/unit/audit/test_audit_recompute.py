"""The audit of one round, with the chain faked (a RoundInfo built here) and the updates in the
auditor's own store: an honest merge verifies, a forged one is a MISMATCH with both hashes, an
included update the leader's checks refuse is a MISMATCH, a missing update cannot be audited, and an
unfinalized round is a named error. Secure-aggregation rounds: test_audit_secure.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import zmq

from swarmd.audit import (
    AuditExit,
    Status,
    UnfinalizedRound,
    UpdateSource,
    audit_round,
    exit_status,
)
from swarmd.checkpoint import CheckpointStore
from swarmd.codec import content_hash
from swarmd.ledger import CommitInfo, Outcome, RoundInfo, RoundStatus
from swarmd.merge import Update, get_rule
from swarmd.task import SwarmSettings

A, B, C = "0x" + "a" * 40, "0x" + "B" * 40, "0x" + "c" * 40


def _model(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.linspace(-1, 1, 50) * v, "n": torch.tensor(3)}


def _round(store: CheckpointStore, merged: bytes | None = None, **changes) -> RoundInfo:
    base, ups = _model(1.0), {A: (_model(1.5), 10), B: (_model(0.5), 30), C: (_model(2.0), 5)}
    rule = get_rule("fedavg")
    rule.begin(base)
    for site in sorted(ups, key=str.lower):
        rule.add(Update(site, *ups[site]))
    info = RoundInfo(
        round=4,
        status=RoundStatus.FINALIZED,
        term=1,
        leader=B,
        commits=tuple(CommitInfo(s, store.put(x), n, block=1) for s, (x, n) in ups.items()),
        failed_leaders=(),
        base_hash=store.put(base),
        merged_hash=merged or content_hash(rule.result()),
        included=(A, B, C),
        opened_block=0,
        first_commit_block=1,
        elected_block=2,
        finalized_block=3,
    )
    return dataclasses.replace(info, **changes)


async def _audit(store: CheckpointStore, info: RoundInfo, swarm: SwarmSettings | None = None):
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=store.root, me=A, curve_public=public, curve_secret=secret, members=[], max_bytes=1 << 20
    )
    async with source:
        return await audit_round(info, swarm or SwarmSettings(), source)


async def test_an_honest_merge_verifies(tmp_path):
    store = CheckpointStore(tmp_path)
    verdict = await _audit(store, _round(store))
    assert verdict.status is Status.VERIFIED and verdict.recomputed == verdict.finalized
    assert verdict.sources == {A: "local", B: "local", C: "local"} and verdict.rule == "fedavg"
    assert exit_status([verdict]) is AuditExit.VERIFIED


async def test_a_forged_merge_is_a_mismatch_with_both_hashes(tmp_path):
    store = CheckpointStore(tmp_path)
    forged = content_hash(_model(9.0))
    verdict = await _audit(store, _round(store, merged=forged))
    assert verdict.status is Status.MISMATCH and verdict.finalized == forged != verdict.recomputed
    assert "MISMATCH" in verdict.line() and forged.hex() in verdict.line()
    assert (
        exit_status([verdict, dataclasses.replace(verdict, status=Status.CANNOT_AUDIT)]) is AuditExit.MISMATCH
    )


async def test_an_included_update_the_leaders_checks_refuse_is_a_mismatch(tmp_path):
    store = CheckpointStore(tmp_path)
    verdict = await _audit(store, _round(store), SwarmSettings(norm_bound=0.5))
    assert verdict.status is Status.MISMATCH and "norm" in verdict.reason


@pytest.mark.parametrize("c_is_bad", [False, True])
async def test_a_failed_validation_claim_is_checked_against_the_committed_update(tmp_path, c_is_bad):
    """The leader leaves C out as FAILED_VALIDATION and merges A and B: a MISMATCH when C's committed
    update passes the checks, verified when it really fails them (a NaN)."""
    store = CheckpointStore(tmp_path)
    info = _round(store)
    if c_is_bad:
        bad = {"w": torch.full((50,), float("nan")), "n": torch.tensor(3)}
        commits = (*info.commits[:2], dataclasses.replace(info.commits[2], update_hash=store.put(bad)))
        info = dataclasses.replace(info, commits=commits)
    rule = get_rule("fedavg")
    rule.begin(_model(1.0))
    for c in sorted(info.commits[:2], key=lambda c: c.site.lower()):
        rule.add(Update(c.site, store.get(c.update_hash), c.n_samples))
    outcomes = (Outcome.INCLUDED, Outcome.INCLUDED, Outcome.FAILED_VALIDATION)
    info = dataclasses.replace(
        info, included=(A, B), outcomes=outcomes, merged_hash=content_hash(rule.result())
    )
    verdict = await _audit(store, info)
    if c_is_bad:
        assert verdict.status is Status.VERIFIED, verdict.line()
    else:
        assert verdict.status is Status.MISMATCH and f"excluded {C} as FAILED_VALIDATION" in verdict.reason


async def test_a_missing_update_cannot_be_audited_and_says_who_was_asked(tmp_path):
    store = CheckpointStore(tmp_path)
    info = _round(store)
    store.path(info.commits[2].update_hash).unlink()
    verdict = await _audit(store, info)
    assert (
        verdict.status is Status.CANNOT_AUDIT
        and C in verdict.reason
        and "not an active member" in verdict.reason
    )
    assert exit_status([verdict]) is AuditExit.INCOMPLETE


async def test_an_unfinalized_round_is_a_named_error(tmp_path):
    store = CheckpointStore(tmp_path)
    info = _round(store, status=RoundStatus.ELECTED, merged_hash=None)
    with pytest.raises(UnfinalizedRound, match="round 4 is elected"):
        await _audit(store, info)
