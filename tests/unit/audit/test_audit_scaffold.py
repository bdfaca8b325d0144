"""`swarm ledger audit` recomputes a SCAFFOLD round: the server variate is part of the merged model,
so an honest merge verifies and a leader that moves c any other way is a MISMATCH."""

from __future__ import annotations

import dataclasses

import torch
import zmq

from swarmd.audit import Status, UpdateSource, audit_round
from swarmd.checkpoint import CheckpointStore
from swarmd.codec import content_hash
from swarmd.ledger import CommitInfo, RoundInfo, RoundStatus
from swarmd.merge import Update, apply_diff, rule_for
from swarmd.merge.base import address_order
from swarmd.task import SCAFFOLD_PREFIX, SwarmSettings, WeightKind

A, B, C = "0x" + "a" * 40, "0x" + "B" * 40, "0x" + "c" * 40
SWARM = SwarmSettings(scaffold=True, send=WeightKind.DIFF)
CV = SCAFFOLD_PREFIX + "w"


def _update(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.linspace(-1, 1, 20) * v, "n": torch.tensor(1), CV: torch.linspace(0, 1, 20) * v}


def _round(store: CheckpointStore, forge_c: bool = False) -> RoundInfo:
    base = {"w": torch.ones(20), "n": torch.tensor(3), CV: torch.full((20,), 0.1)}
    ups = {A: (_update(1.5), 10), B: (_update(-0.5), 30), C: (_update(2.0), 5)}
    rule = rule_for(SWARM)
    rule.begin(base)
    for site in sorted(ups, key=address_order):
        rule.add(Update(site, *ups[site]))
    merged = apply_diff(base, rule.result())
    if forge_c:  # e.g. a sample-weighted mean of the deltas instead of the plain one
        merged[CV] = merged[CV] + 0.01
    return RoundInfo(
        round=2,
        status=RoundStatus.FINALIZED,
        term=1,
        leader=B,
        commits=tuple(CommitInfo(s, store.put(x), n, block=1) for s, (x, n) in ups.items()),
        failed_leaders=(),
        base_hash=store.put(base),
        merged_hash=content_hash(merged),
        included=(A, B, C),
        opened_block=0,
        first_commit_block=1,
        elected_block=2,
        finalized_block=3,
    )


async def _audit(store: CheckpointStore, info: RoundInfo):
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=store.root, me=A, curve_public=public, curve_secret=secret, members=[], max_bytes=1 << 20
    )
    async with source:
        return await audit_round(info, SWARM, source)


async def test_a_scaffold_round_verifies(tmp_path):
    store = CheckpointStore(tmp_path)
    verdict = await _audit(store, _round(store))
    assert verdict.status is Status.VERIFIED and verdict.rule == "scaffold"


async def test_a_forged_server_variate_is_a_mismatch(tmp_path):
    store = CheckpointStore(tmp_path)
    verdict = await _audit(store, _round(store, forge_c=True))
    assert verdict.status is Status.MISMATCH and verdict.recomputed != verdict.finalized


async def test_without_the_setting_the_same_round_does_not_verify(tmp_path):
    """The audit must know the task: read as plain fedavg, c is sample-weighted and the hash differs."""
    store = CheckpointStore(tmp_path)
    info = _round(store)
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=store.root, me=A, curve_public=public, curve_secret=secret, members=[], max_bytes=1 << 20
    )
    async with source:
        verdict = await audit_round(info, dataclasses.replace(SWARM, scaffold=False), source)
    assert verdict.status is Status.MISMATCH
