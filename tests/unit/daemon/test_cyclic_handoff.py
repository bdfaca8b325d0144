"""The receiver's side of a cyclic handoff, through the transport handler's entry points (term 0), against
a faked ledger boundary: a site takes the round's model only while it waits for it, only from the round's
latest committer, only for the hash that committer committed, and only once; what it takes is stored
and journaled before it answers."""

from __future__ import annotations

import pytest
import torch

from swarmd.codec import Manifest, content_hash
from swarmd.daemon.cyclic import HANDOFF_TERM, Handoff
from swarmd.daemon.rounds import RoundDriver
from swarmd.ledger import CommitInfo, Member, MemberStatus, RoundInfo, RoundStatus
from swarmd.transport import Refusal, UpdateHeader

ME = "0x" + "a1" * 20
SENDER, EARLIER, STRANGER = ("0x" + c * 40 for c in "bcd")
KEYS = {SENDER: b"\x02" * 32, EARLIER: b"\x03" * 32, STRANGER: b"\x04" * 32}
MODEL = {"w": torch.ones(3)}
DIGEST = content_hash(MODEL)


class FakeLedger:
    """The round as the chain has it: EARLIER committed, then SENDER (the latest) committed MODEL."""

    address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    account = None

    def round(self, r: int) -> RoundInfo:
        commits = (CommitInfo(EARLIER, b"\1" * 32, 4, 10), CommitInfo(SENDER, DIGEST, 4, 11))
        return RoundInfo(r, RoundStatus.OPEN, 0, None, commits, (), b"\0" * 32, None, (), 1, 10, None, None)


@pytest.fixture
def receiver(unit_driver) -> RoundDriver:
    # the receiver's checks never reach the transport or the trainer
    d = unit_driver(ledger=FakeLedger(), address=ME)
    d.peers.update([Member(a, KEYS[a], "tcp://x", MemberStatus.ACTIVE) for a in (SENDER, EARLIER)])
    return d


def _header(digest: bytes = DIGEST, r: int = 2) -> UpdateHeader:
    return UpdateHeader(round=r, term=HANDOFF_TERM, digest=digest, manifest=Manifest(()))


def _wait(d: RoundDriver) -> Handoff:
    d.handoff = Handoff(round=2, info=d.ledger.round(2), base={"w": torch.zeros(3)})
    return d.handoff


async def test_the_model_is_taken_from_the_latest_committer_for_its_committed_hash(receiver) -> None:
    wait = _wait(receiver)
    assert receiver.check_offer(KEYS[SENDER], _header()).ok
    verdict = await receiver.on_update(
        KEYS[SENDER], _header(), {k: v.clone() for k, v in MODEL.items()}, DIGEST
    )
    assert verdict.ok and wait.got.is_set() and (wait.sender, wait.digest) == (SENDER, DIGEST)
    assert receiver.journal.get(2).received == {SENDER: DIGEST} and receiver.store.has(DIGEST)
    again = receiver.check_offer(KEYS[SENDER], _header())
    assert (again.ok, again.reason) == (False, Refusal.DUPLICATE)  # the model is taken once


async def test_what_is_refused_and_why(receiver) -> None:
    not_waiting = receiver.check_offer(KEYS[SENDER], _header())
    assert not_waiting.reason == Refusal.NOT_READY  # the holder retries until its handoff timeout
    _wait(receiver)
    assert receiver.check_offer(KEYS[SENDER], _header(r=3)).reason == Refusal.NOT_READY  # another round
    assert receiver.check_offer(KEYS[STRANGER], _header()).reason == Refusal.NOT_MEMBER
    assert receiver.check_offer(KEYS[EARLIER], _header(b"\1" * 32)).reason == Refusal.NOT_READY  # not latest
    assert receiver.check_offer(KEYS[SENDER], _header(b"\5" * 32)).reason == Refusal.WRONG_DIGEST
    bad = {"w": torch.full((3,), float("nan"))}
    verdict = await receiver.on_update(KEYS[SENDER], _header(), bad, DIGEST)
    assert verdict.reason == Refusal.INVALID and "finite" in verdict.detail
    assert not receiver.journal.get(2).received
