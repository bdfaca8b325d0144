"""The audit of a secure-aggregation round, from a real round played in-process: five sites advertise
keys, share their secrets into real vaults and mask real updates; three deliver (S), one commits and
drops (D), one never commits (X); the leader's Unmasker unmasks from the vaults' answers and its
transcript is kept where a leader keeps it. The chain is faked (a RoundInfo built here).

An honest round verifies; a finalized model that is not the unmasked sum is a MISMATCH with both
hashes; a transcript whose dropped mask key is not the advertised one, whose self-mask seed was
swapped, or whose survivors are not the chain's is a MISMATCH naming why; no transcript, unreadable
transcript bytes or no key sets: cannot audit, naming the error."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from swarmd.audit import AuditExit, KeySets, Status, UpdateSource, audit_round, exit_status
from swarmd.audit.secure import MISSING_FACTS
from swarmd.checkpoint import CheckpointStore
from swarmd.codec import content_hash
from swarmd.ledger import CommitInfo, RoundInfo, RoundStatus
from swarmd.merge import with_unmasked
from swarmd.privacy import (
    Advertised,
    BadTranscript,
    RoundSecrets,
    SecAggParams,
    ShareVault,
    Unmasker,
    UnmaskTranscript,
    graph_seed,
    make_shares,
    mask_update,
    neighbourhood,
)
from swarmd.privacy.transcript import transcript_file
from swarmd.task import SwarmSettings

R, TERM = 3, 2
PARAMS = SecAggParams(threshold=3)  # 3 survivors hold enough shares of every secret


def _address(i: int) -> str:
    return "0x" + hashlib.sha256(f"audited site {i}".encode()).hexdigest()[:40]


def _model(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    return {
        "conv.weight": torch.from_numpy(rng.uniform(-1, 1, (4, 3, 3)).astype(np.float32)),
        "fc.bias": torch.from_numpy(rng.uniform(-1, 1, (7,)).astype(np.float32)),
        "steps": torch.tensor(12),  # a counter: not masked, the base's
    }


@dataclasses.dataclass
class Played:
    info: RoundInfo
    keysets: KeySets
    transcript: UnmaskTranscript
    store: CheckpointStore
    state: Path
    honest: bytes

    def keep(self, t: UnmaskTranscript | bytes) -> None:
        path = transcript_file(self.state, R)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(t if isinstance(t, bytes) else t.to_bytes())


def _play(tmp: Path, *, forge: bool = False, x_shares: int = 5) -> Played:
    """`x_shares`: how many holders get the absent site's shares (below 4, its key cannot be rebuilt
    from the survivors' answers and their pair seeds with it stand in the transcript instead)."""
    rng = np.random.default_rng(5)
    secrets = {}
    for i in range(5):
        s = RoundSecrets(R, _address(i), *(rng.bytes(32) for _ in range(3)))
        secrets[s.owner] = s
    sites = sorted(secrets)
    advertised = [Advertised(s.owner, *s.public) for s in secrets.values()]
    state = tmp / "state"
    store = CheckpointStore(state / "checkpoints")
    base = _model(rng)
    base_hash = store.put(base)
    graph = neighbourhood(advertised, graph_seed(R, base_hash), 0)
    vaults = {s: ShareVault(tmp / "vaults" / s) for s in sites}
    for s in sites:
        blobs = sorted(make_shares(secrets[s], advertised, graph, PARAMS).items())
        for holder, blob in blobs[:x_shares] if s == sites[4] else blobs:
            vaults[holder].accept(secrets[holder], s, blob, advertised, graph)
    survivors, dropped = sites[:3], sites[3]
    n = {s: 10 * (i + 1) for i, s in enumerate(sites[:4])}  # sites[4] never commits
    commits, masked = [], {}
    for s in sites[:4]:
        plain = {k: v.numpy() for k, v in _model(rng).items() if v.is_floating_point()}
        ring = mask_update(secrets[s], advertised, graph, plain, n[s], PARAMS)
        masked[s] = ring
        h = store.put({k: torch.from_numpy(v.view(np.int32)) for k, v in ring.items()})
        commits.append(CommitInfo(s, h, n[s], block=1))
    um = Unmasker(R, PARAMS, advertised, graph, n)
    for s in survivors:
        um.add(s, masked[s])
    for j, req in um.requests(TERM, survivors[0]).items():
        um.accept(j, vaults[j].answer(secrets[j], req, n, advertised, graph))
    mean = {k: torch.from_numpy(v) for k, v in um.result().items()}
    merged = with_unmasked(base, mean, is_diff=False)
    honest = content_hash(merged)
    if forge:  # what the leader's FORGE_MERGE fault does: one value nudged, the transcript bound to it
        merged["fc.bias"][0] += 1e-3
    merged_hash = content_hash(merged)
    assert um.transcript is not None
    transcript = um.transcript.bound_to(merged_hash)
    info = RoundInfo(
        round=R, status=RoundStatus.FINALIZED, term=TERM, leader=survivors[0], commits=tuple(commits),
        failed_leaders=(), base_hash=base_hash, merged_hash=merged_hash, included=tuple(survivors),
        opened_block=0, first_commit_block=1, elected_block=2, finalized_block=3, key_count=5,
        recovered=(dropped,),
    )  # fmt: skip
    played = Played(info, KeySets(PARAMS, lambda r: advertised), transcript, store, state, honest)
    played.keep(transcript)
    return played


async def _audit(p: Played, keysets: KeySets | str | None = "given"):
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=p.store.root, me=_address(9), curve_public=public, curve_secret=secret, members=[],
        max_bytes=1 << 20,
    )  # fmt: skip
    async with source:
        return await audit_round(
            p.info, SwarmSettings(), source, p.keysets if keysets == "given" else keysets
        )


async def test_an_honest_secure_round_verifies_from_the_masked_inputs_and_the_transcript(tmp_path):
    p = _play(tmp_path)
    t = p.transcript
    assert set(t.keys) == set(p.info.recovered) | {_address_absent(p)} and not t.pairs  # X's key rebuilt
    verdict = await _audit(p)
    assert verdict.status is Status.VERIFIED and verdict.recomputed == verdict.finalized == p.honest
    assert verdict.rule == "secure sum" and verdict.sources == dict.fromkeys(p.info.included, "local")
    assert exit_status([verdict]) is AuditExit.VERIFIED


async def test_pair_seeds_stand_for_an_absent_key_that_cannot_be_rebuilt_and_are_bound_by_the_sum(tmp_path):
    p = _play(tmp_path, x_shares=2)
    absent = _address_absent(p)
    assert absent not in p.transcript.keys and {x for m in p.transcript.pairs.values() for x in m} == {absent}
    assert (await _audit(p)).status is Status.VERIFIED
    j = next(iter(p.transcript.pairs))
    p.keep(dataclasses.replace(p.transcript, pairs={**p.transcript.pairs, j: {absent: os.urandom(32)}}))
    verdict = await _audit(p)
    assert verdict.status is Status.MISMATCH and verdict.recomputed not in (None, p.honest)


def _address_absent(p: Played) -> str:
    committers = {c.site for c in p.info.commits}
    return next(a for a in (_address(i) for i in range(5)) if a not in committers)


async def test_a_finalized_model_that_is_not_the_unmasked_sum_is_a_mismatch(tmp_path):
    p = _play(tmp_path, forge=True)
    verdict = await _audit(p)
    assert verdict.status is Status.MISMATCH and verdict.recomputed == p.honest != verdict.finalized
    assert "not the unmasked sum" in verdict.reason and exit_status([verdict]) is AuditExit.MISMATCH


async def test_a_dropped_sites_mask_key_that_is_not_the_advertised_one_is_caught(tmp_path):
    p = _play(tmp_path)
    dropped = p.info.recovered[0]
    p.keep(dataclasses.replace(p.transcript, keys={**p.transcript.keys, dropped: os.urandom(32)}))
    verdict = await _audit(p)
    assert verdict.status is Status.MISMATCH and "forged_key" in verdict.reason and dropped in verdict.reason


async def test_a_swapped_self_mask_seed_makes_the_sum_pseudorandom_and_is_a_mismatch(tmp_path):
    p = _play(tmp_path)
    first = p.info.included[0]
    p.keep(dataclasses.replace(p.transcript, b={**p.transcript.b, first: os.urandom(32)}))
    verdict = await _audit(p)
    assert verdict.status is Status.MISMATCH and verdict.recomputed not in (None, p.honest)


async def test_a_transcript_whose_survivors_are_not_the_chains_is_a_mismatch(tmp_path):
    p = _play(tmp_path)
    info = dataclasses.replace(p.info, included=p.info.included[:2], recovered=p.info.recovered)
    verdict = await _audit(dataclasses.replace(p, info=info))
    assert verdict.status is Status.MISMATCH and "(sets)" in verdict.reason


async def test_without_a_transcript_the_round_cannot_be_audited_and_says_who_was_asked(tmp_path):
    p = _play(tmp_path)
    transcript_file(p.state, R).unlink()
    verdict = await _audit(p)
    assert verdict.status is Status.CANNOT_AUDIT and f"no unmask transcript of round {R}" in verdict.reason
    assert p.info.leader in verdict.reason and exit_status([verdict]) is AuditExit.INCOMPLETE


async def test_unreadable_transcript_bytes_are_a_named_error(tmp_path):
    p = _play(tmp_path)
    p.keep(b"\xc1 not msgpack")
    verdict = await _audit(p)
    assert verdict.status is Status.CANNOT_AUDIT and "BadTranscript" in verdict.reason


async def test_a_secure_round_without_key_sets_cannot_be_audited(tmp_path):
    verdict = await _audit(_play(tmp_path), keysets=None)
    assert verdict.status is Status.CANNOT_AUDIT and verdict.reason == MISSING_FACTS


def test_the_transcript_round_trips_and_refuses_anything_else(tmp_path):
    t = _play(tmp_path).transcript
    raw = t.to_bytes()
    assert UnmaskTranscript.from_bytes(raw) == t and t.id == UnmaskTranscript.from_bytes(raw).id
    assert "b=" not in repr(t)  # secrets never reach a log
    import msgpack

    body = msgpack.unpackb(raw, raw=False)
    bad = {
        "malformed": [
            b"\xc1",
            raw[:-3],
            b"x" * (61 << 10),
            msgpack.packb({**body, "extra": 1}),
            msgpack.packb({**body, "b": {k: v[:31] for k, v in body["b"].items()}}),
            msgpack.packb({**body, "survivors": body["survivors"][::-1]}),  # not sorted
            msgpack.packb({**body, "pairs": [1]}),
            msgpack.packb({**body, "leader": "nobody"}),
        ],
        "version": [msgpack.packb({**body, "v": 2})],
    }
    for reason, samples in bad.items():
        for sample in samples:
            with pytest.raises(BadTranscript) as err:
                UnmaskTranscript.from_bytes(sample)
            assert err.value.reason == reason, sample[:40]
