"""Receipts through the round driver, against a faked ledger boundary (address, account, chain id):
the leader signs each update it accepts and hands the signature back in its verdict; the committer
keeps a receipt only when the round's leader signed exactly its commitment, and counts the rest
without failing; the DROP_UPDATE fault receipts its victim's update and leaves it out of the merge."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from eth_account import Account

from swarmd.codec import Manifest, content_hash
from swarmd.compress import Encoding
from swarmd.daemon.accounting import exclusion_reasons
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.faults import Fault
from swarmd.daemon.rounds import RoundDriver
from swarmd.ledger import CommitInfo, Member, MemberStatus, Outcome, RoundInfo, RoundStatus
from swarmd.ledger.receipt import Receipt, receipt_signer, sign_receipt
from swarmd.merge import rule_for
from swarmd.transport import Refusal, UpdateHeader

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = 31337
LEADER = Account.from_key(b"\x01" * 32)
PEER = Account.from_key(b"\x02" * 32).address
OTHER = Account.from_key(b"\x03" * 32)
PEER_KEY = b"\x07" * 32
UPDATE = {"w": torch.ones(3)}
DIGEST = content_hash(UPDATE)


class FakeLedger:
    """The three things receipts need from a Ledger client."""

    address = CONTRACT

    def __init__(self, account: object) -> None:
        self.account = account

    def chain_id(self) -> int:
        return CHAIN_ID


@pytest.fixture
def site(unit_driver):
    """A site of the round (these steps never reach the transport or the trainer), by its account."""

    def build(me: str, account: object) -> RoundDriver:
        d = unit_driver(ledger=FakeLedger(account), address=me)
        d.peers.update([Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE)])
        return d

    return build


@pytest.fixture
def leader(site) -> RoundDriver:
    d = site(LEADER.address, LEADER)
    d.exchange = Exchange(
        round=2,
        term=1,
        expected={LEADER.address: (b"\1" * 32, 4), PEER: (DIGEST, 4)},
        base={"w": torch.zeros(3)},
        rule=rule_for(d.task.swarm),
        is_diff=False,
    )
    return d


@pytest.fixture
def committer(site) -> RoundDriver:
    return site(PEER, None)


def _info(term: int = 1, leader: str = LEADER.address) -> RoundInfo:
    return RoundInfo(
        round=2,
        status=RoundStatus.ELECTED,
        term=term,
        leader=leader,
        commits=(CommitInfo(PEER, DIGEST, 4, 10), CommitInfo(LEADER.address, b"\1" * 32, 4, 10)),
        failed_leaders=(),
        base_hash=b"\0" * 32,
        merged_hash=None,
        included=(),
        opened_block=1,
        first_commit_block=10,
        elected_block=12,
        finalized_block=None,
    )


def _count(d: RoundDriver, outcome: str) -> float:
    value = d.metrics.registry.get_sample_value("swarmd_receipts_total", {"outcome": outcome})
    return value or 0.0


async def _deliver(d: RoundDriver):
    header = UpdateHeader(round=2, term=1, digest=DIGEST, manifest=Manifest(()))
    return await d.on_update(PEER_KEY, header, {k: v.clone() for k, v in UPDATE.items()}, DIGEST)


async def test_the_leader_receipts_an_accepted_update_for_its_term_and_merges_it(leader) -> None:
    verdict = await _deliver(leader)
    assert verdict.ok and verdict.receipt is not None
    receipt = Receipt(round=2, term=1, site=PEER, update_hash=DIGEST)
    assert receipt_signer(CONTRACT, CHAIN_ID, receipt, verdict.receipt) == LEADER.address
    assert PEER in leader.exchange.received and leader.journal.get(2).received  # type: ignore[union-attr]


async def test_a_rejected_update_gets_no_receipt(leader) -> None:
    header = UpdateHeader(round=2, term=1, digest=DIGEST, manifest=Manifest(()))
    verdict = await leader.on_update(PEER_KEY, header, {"w": torch.full((3,), float("nan"))}, DIGEST)
    assert not verdict.ok and verdict.receipt is None
    assert exclusion_reasons(leader.exchange) == {PEER: Outcome.FAILED_VALIDATION}  # type: ignore[arg-type]


async def test_the_leader_checks_an_update_off_its_event_loop_and_refuses_it_once_the_merge_began(
    leader, monkeypatch
) -> None:
    on_loop: list[bool] = []
    inspect = Exchange.inspect

    def inspect_while_the_merge_begins(self: Exchange, sender: str, state) -> None:
        on_loop.append(threading.current_thread() is threading.main_thread())
        inspect(self, sender, state)
        self.close()  # the deadline passed and the merge began while this update was checked

    monkeypatch.setattr(Exchange, "inspect", inspect_while_the_merge_begins)
    verdict = await _deliver(leader)
    assert on_loop == [False]  # a pass over every value, kept off the loop every stream shares
    assert not verdict.ok and verdict.receipt is None
    assert verdict.reason == Refusal.INVALID and "merge began" in verdict.detail  # not a "duplicate"
    assert PEER not in leader.exchange.received  # type: ignore[union-attr]


@pytest.mark.parametrize(("compression", "most"), [("none", 2), ("int8", 1)])
async def test_updates_are_checked_side_by_side_unless_compressed(
    leader, monkeypatch, compression, most
) -> None:
    """Two updates handed over at once are checked at once; compressed ones (each check decodes a whole
    model) one after the other, so the leader's memory stays within its bound."""
    second_key, second = b"\x08" * 32, Account.from_key(b"\x04" * 32).address
    other = {"w": torch.full((3,), 2.0)}
    leader.peers.update(
        [
            Member(a, k, f"tcp://{k.hex()}", MemberStatus.ACTIVE)
            for a, k in ((PEER, PEER_KEY), (second, second_key))
        ]
    )
    ex = leader.exchange
    ex.expected[second] = (content_hash(other), 4)
    ex.encoding = Encoding(compression)
    inside, seen, lock = [0], [], threading.Lock()

    def slow_inspect(self: Exchange, sender: str, state) -> None:
        with lock:
            inside[0] += 1
            seen.append(inside[0])
        time.sleep(0.2)
        with lock:
            inside[0] -= 1

    monkeypatch.setattr(Exchange, "inspect", slow_inspect)
    header = UpdateHeader(round=2, term=1, digest=DIGEST, manifest=Manifest(()))
    verdicts = await asyncio.gather(
        leader.on_update(PEER_KEY, header, dict(UPDATE), DIGEST),
        leader.on_update(second_key, header, other, content_hash(other)),
    )
    assert all(v.ok for v in verdicts) and {PEER, second} <= set(ex.received)
    assert max(seen) == most


async def test_drop_update_receipts_the_victim_then_reports_it_not_delivered(leader) -> None:
    leader.faults = frozenset({Fault.DROP_UPDATE})
    verdict = await _deliver(leader)
    assert verdict.ok and verdict.receipt is not None  # the committer believes it was taken
    ex = leader.exchange
    assert ex is not None and PEER not in ex.received and ex.pending == {LEADER.address}
    assert exclusion_reasons(ex) == {PEER: Outcome.NOT_DELIVERED}
    receipt = Receipt(round=2, term=1, site=PEER, update_hash=DIGEST)
    assert receipt_signer(CONTRACT, CHAIN_ID, receipt, verdict.receipt) == LEADER.address


async def test_the_committer_keeps_the_leaders_receipt(committer) -> None:
    sig = sign_receipt(LEADER, CONTRACT, CHAIN_ID, Receipt(2, 1, PEER, DIGEST))
    assert await committer.keep_receipt(2, _info(), sig)
    assert committer.receipts.get(2) == (Receipt(2, 1, PEER, DIGEST), sig)
    assert _count(committer, "kept") == 1


@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        ("none", "missing"),
        ("someone_else", "invalid"),  # signed, but not by this term's leader
        ("other_term", "invalid"),  # the leader's receipt of another term
        ("other_hash", "invalid"),  # not what we committed
        ("garbage", "invalid"),
    ],
)
async def test_a_missing_or_wrong_receipt_is_counted_not_kept_and_not_raised(
    committer, case, outcome
) -> None:
    sig = {
        "none": None,
        "someone_else": sign_receipt(OTHER, CONTRACT, CHAIN_ID, Receipt(2, 1, PEER, DIGEST)),
        "other_term": sign_receipt(LEADER, CONTRACT, CHAIN_ID, Receipt(2, 0, PEER, DIGEST)),
        "other_hash": sign_receipt(LEADER, CONTRACT, CHAIN_ID, Receipt(2, 1, PEER, b"\5" * 32)),
        "garbage": b"\x00" * 65,
    }[case]
    assert not await committer.keep_receipt(2, _info(), sig)
    assert committer.receipts.get(2) is None
    assert _count(committer, outcome) == 1 and _count(committer, "kept") == 0
