"""The audit of a Krum round: the included set is the selected set, and the audit fetches the updates
finalized REJECTED_BY_RULE too and checks that the rule rejects exactly those."""

from __future__ import annotations

import dataclasses

import torch
import zmq

from swarmd.audit import Status, UpdateSource, audit_round
from swarmd.checkpoint import CheckpointStore
from swarmd.codec import content_hash
from swarmd.ledger import CommitInfo, Outcome, RoundInfo, RoundStatus
from swarmd.merge import Update, get_rule
from swarmd.task import SwarmSettings

SITES = tuple("0x" + c * 40 for c in "abcde")
EVIL = SITES[3]
KRUM = SwarmSettings(merge="krum", min_peers=5, krum_f=1, krum_m=3)


def _round(store: CheckpointStore) -> RoundInfo:
    """A Krum round finalized as an honest leader would: 3 selected, 2 REJECTED_BY_RULE."""
    g = torch.Generator().manual_seed(11)
    base = {"w": torch.randn(40, generator=g), "n": torch.tensor(2)}
    ups = {s: {"w": base["w"] + 0.01 * torch.randn(40, generator=g), "n": torch.tensor(3)} for s in SITES}
    ups[EVIL]["w"] *= -20
    rule = get_rule("krum", f=1, m=3)
    rule.begin(base)
    for site in SITES:
        rule.add(Update(site, ups[site], 10))
    merged = rule.result()
    commits = tuple(CommitInfo(s, store.put(u), 10, block=1) for s, u in ups.items())
    return RoundInfo(
        round=6, status=RoundStatus.FINALIZED, term=1, leader=SITES[0], commits=commits, failed_leaders=(),
        base_hash=store.put(base), merged_hash=content_hash(merged), included=rule.included, opened_block=0,
        first_commit_block=1, elected_block=2, finalized_block=3, revealed=SITES,
        outcomes=tuple(Outcome.REJECTED_BY_RULE if s in rule.rejected else Outcome.INCLUDED for s in SITES),
    )  # fmt: skip


async def _audit(store: CheckpointStore, info: RoundInfo):
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=store.root,
        me=SITES[0],
        curve_public=public,
        curve_secret=secret,
        members=[],
        max_bytes=1 << 20,
    )
    async with source:
        return await audit_round(info, KRUM, source)


async def test_an_honest_krum_round_verifies_with_its_rejections(tmp_path):
    store = CheckpointStore(tmp_path)
    info = _round(store)
    assert EVIL not in info.included and len(info.included) == 3
    verdict = await _audit(store, info)
    assert verdict.status is Status.VERIFIED, verdict.reason
    assert set(verdict.sources) == set(SITES)  # the rejected updates were fetched too


async def test_a_leader_that_marks_the_wrong_site_rejected_is_a_mismatch(tmp_path):
    store = CheckpointStore(tmp_path)
    info = _round(store)
    honest = SITES[info.outcomes.index(Outcome.INCLUDED)]
    # Swap the verdicts of the outlier and an honest selected site: the merged hash is left as it was.
    swapped = tuple(
        Outcome.INCLUDED if s == EVIL else Outcome.REJECTED_BY_RULE if s == honest else o
        for s, o in zip(SITES, info.outcomes, strict=True)
    )
    included = tuple(s for s, o in zip(SITES, swapped, strict=True) if o is Outcome.INCLUDED)
    verdict = await _audit(store, dataclasses.replace(info, outcomes=swapped, included=included))
    assert verdict.status is Status.MISMATCH and "REJECTED_BY_RULE" in verdict.reason
    assert EVIL in verdict.reason  # the rule rejects it, the leader did not say so
