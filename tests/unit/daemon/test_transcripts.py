"""The leader's unmask transcripts against a faked chain: kept 0600 where the auditor looks, served to a
member asking with its id only once the chain shows that term's model finalized; a wrong id, a round
not finalized (or finalized by another term), no transcript, unreadable bytes or a stranger are refused,
named and counted."""

from __future__ import annotations

import dataclasses
import hashlib
from types import SimpleNamespace

import pytest

from swarmd.codec import Digest
from swarmd.daemon.rounds import RoundDriver
from swarmd.ledger import Member, MemberStatus, RoundInfo, RoundStatus
from swarmd.privacy import UnmaskTranscript
from swarmd.privacy.transcript import UNBOUND, transcript_file
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR
from swarmd.transport import PeerId, Refusal, SecAggHeader, SecAggTopic, Verdict

ME, PEER = "0x" + "1" * 40, "0x" + "2" * 40
PEER_KEY = PeerId(b"\x07" * 32)
MERGED = hashlib.sha256(b"the merged model").digest()
R, TERM = 3, 2


class FakeLedger:
    def __init__(self) -> None:
        self.info = RoundInfo(
            round=R, status=RoundStatus.FINALIZED, term=TERM, leader=ME, commits=(), failed_leaders=(),
            base_hash=b"\0" * 32, merged_hash=MERGED, included=(ME, PEER), opened_block=0,
            first_commit_block=1, elected_block=2, finalized_block=3, key_count=2,
        )  # fmt: skip

    def round(self, r: int) -> RoundInfo:
        return self.info


@pytest.fixture
def leader(unit_driver, tmp_path) -> RoundDriver:
    task = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")
    task = dataclasses.replace(task, privacy=dataclasses.replace(task.privacy, secure_aggregation=True))
    d = unit_driver(ledger=FakeLedger(), address=ME, task=task)  # the answers never reach the transport
    d.setup_secure(tmp_path / "state")
    d.peers.update([Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE)])
    used = UnmaskTranscript(R, TERM, ME, UNBOUND, (ME, PEER), (), {ME: b"\1" * 32, PEER: b"\2" * 32})
    d.keep_transcript(R, SimpleNamespace(transcript=used), MERGED)  # type: ignore[arg-type]
    return d


async def _ask(d: RoundDriver, body: bytes, peer: PeerId = PEER_KEY) -> bytes | Verdict:
    return await d.on_secagg(peer, SecAggHeader(round=R, topic=SecAggTopic.TRANSCRIPT), body)


async def test_a_kept_transcript_is_private_on_disk_and_served_by_its_id_once_finalized(leader, tmp_path):
    path = transcript_file(tmp_path / "state", R)
    assert path.stat().st_mode & 0o777 == 0o600
    held = UnmaskTranscript.from_bytes(path.read_bytes())
    assert held.merged == MERGED and held.b[PEER] == b"\2" * 32
    assert await _ask(leader, held.id) == path.read_bytes()


async def test_what_is_not_served(leader, tmp_path):
    held = UnmaskTranscript.from_bytes(transcript_file(tmp_path / "state", R).read_bytes())
    cases: list[tuple[str, Refusal]] = []

    async def refused(body: bytes, peer: PeerId = PEER_KEY) -> None:
        verdict = await _ask(leader, body, peer)
        assert isinstance(verdict, Verdict) and not verdict.ok
        cases.append((verdict.detail, verdict.reason))

    await refused(b"\0" * 32)  # another id
    leader.ledger.info = dataclasses.replace(leader.ledger.info, term=TERM + 1)  # another term finalized
    await refused(held.id)
    leader.ledger.info = dataclasses.replace(leader.ledger.info, status=RoundStatus.ELECTED)
    await refused(held.id)
    await refused(held.id, PeerId(b"\x09" * 32))  # not a member
    transcript_file(tmp_path / "state", R).write_bytes(b"\xc1 garbage")
    await refused(held.id)
    transcript_file(tmp_path / "state", R).unlink()
    await refused(held.id)
    reasons = [reason for _, reason in cases]
    assert reasons == [
        Refusal.NOT_FOUND, Refusal.NOT_READY, Refusal.NOT_READY, Refusal.NOT_MEMBER,
        Refusal.PRIVACY_REFUSED, Refusal.NOT_FOUND,
    ]  # fmt: skip
    assert "BadTranscript" in cases[4][0] and "keeps no unmask transcript" in cases[5][0]


def test_after_a_restart_the_leader_serves_every_masked_update_in_its_sum_its_own_included(leader, tmp_path):
    """The leader's own masked update never left it: a restarted leader that did not serve it would leave
    its rounds un-auditable (the e2e test caught this when the killed site had led an earlier round)."""
    ours, theirs, other = (Digest(hashlib.sha256(s).digest()) for s in (b"ours", b"theirs", b"other"))
    leader.journal.update(R, update_hash=ours, key_count=2, committed=True, received={PEER: theirs})
    leader.journal.update(R + 1, update_hash=other, key_count=2, committed=True)  # led by another
    leader.serve_committed()
    assert {ours, theirs} <= leader.gossip.servable and other not in leader.gossip.servable
