"""Finalize accounting, attestations and disputes against a real anvil: one outcome per commit (omitting,
adding or mislabelling a committer reverts), NOT_REVEALED exactly for the non-revealers, auditors'
Attested events, a receipt signed by the leader recorded once as a dispute (and every wrong receipt
refused by name), and the gas of elect and finalize at 8 members."""

from __future__ import annotations

import pytest
from chainkit import Consortium, commit, deploy_consortium, elect, finalize, h32, outcomes
from eth_account import Account
from eth_account.signers.local import LocalAccount

from swarmd.ledger import Attestation, Devnet, Outcome, RoundStatus, errors
from swarmd.ledger.errors import LedgerArgumentError
from swarmd.ledger.receipt import Receipt, sign_receipt

pytestmark = pytest.mark.chain

ELECT_GAS_LIMIT = 150_000
FINALIZE_GAS_LIMIT = 150_000


def _round(c: Consortium, r: int = 0, *, skip: set[str] | None = None) -> None:
    for i, site in enumerate(c.sites):
        commit(site, r, h32(f"u-{r}-{i}"), 10 + i)
    elect(c, r, skip=skip or set())


def test_finalize_records_every_outcome(consortium: Consortium) -> None:
    c = consortium
    withholder = str(c.sites[2].sender)
    _round(c, skip={withholder})
    info = c.admin.round(0)
    leader = c.site(info.leader)  # type: ignore[arg-type]
    other = next(a for a in info.revealed if a != info.leader)
    given = {info.leader: Outcome.INCLUDED, other: Outcome.HASH_MISMATCH, withholder: Outcome.NOT_REVEALED}
    leader.finalize(0, h32("m"), given)
    done = c.admin.round(0)
    assert done.status is RoundStatus.FINALIZED
    assert done.outcomes == tuple(given[a] for a in done.committers)  # commit order
    assert done.included == (info.leader,) and done.recovered == ()
    assert done.outcome_of(other) is Outcome.HASH_MISMATCH
    assert done.to_json()["outcomes"][c.sites.index(c.site(other))] == "hash_mismatch"
    event = next(e for e in c.admin.events().poll() if e.name == "RoundFinalized")
    assert event.args["outcomes"] == bytes(int(given[a]) for a in done.committers)


def test_finalize_must_account_for_every_committer(consortium: Consortium) -> None:
    c = consortium
    withholder = str(c.sites[2].sender)
    _round(c, skip={withholder})
    info = c.admin.round(0)
    leader = c.site(info.leader)  # type: ignore[arg-type]
    good = outcomes(c, 0)
    # The client refuses a missing or unknown committer before anything is sent...
    with pytest.raises(LedgerArgumentError, match="missing"):
        leader.finalize(0, h32("m"), {a: o for a, o in good.items() if a != withholder})
    with pytest.raises(LedgerArgumentError, match="not committers"):
        leader.finalize(0, h32("m"), {**good, str(c.outsiders[0].sender): Outcome.INCLUDED})
    # ...and the contract refuses what a client could still send: a wrong count, an unknown code.
    with pytest.raises(errors.OutcomeCount) as exc:
        leader._send("finalize", 0, h32("m"), bytes([0, 0]))
    assert exc.value.error_args == (0, 3, 2)
    with pytest.raises(errors.OutcomeCount):
        leader._send("finalize", 0, h32("m"), bytes([0, 0, 5, 0]))
    with pytest.raises(errors.UnknownOutcome) as exc:
        leader._send("finalize", 0, h32("m"), bytes([0, 7, 5]))
    assert exc.value.error_args == (0, 1, 7)
    # NOT_REVEALED is the contract's verdict: required for the withholder, refused for a revealer.
    with pytest.raises(errors.RevealOutcome) as exc:
        leader.finalize(0, h32("m"), {**good, withholder: Outcome.NOT_DELIVERED})
    assert exc.value.error_args == (0, withholder, int(Outcome.NOT_DELIVERED))
    revealer = next(a for a in info.revealed if a != info.leader)
    with pytest.raises(errors.RevealOutcome):
        leader.finalize(0, h32("m"), {**good, revealer: Outcome.NOT_REVEALED})
    with pytest.raises(errors.NothingIncluded):
        leader.finalize(0, h32("m"), {**good, info.leader: Outcome.REJECTED_BY_RULE, revealer: 1})
    with pytest.raises(LedgerArgumentError, match="not an outcome"):
        leader.finalize(0, h32("m"), {**good, revealer: 9})  # type: ignore[dict-item]
    leader.finalize(0, h32("m"), good)
    assert c.admin.round(0).outcomes == tuple(good[a] for a in info.committers)


def test_attestations(consortium: Consortium) -> None:
    c = consortium
    auditor = c.sites[1]
    with pytest.raises(errors.NotFinalized) as exc:
        auditor.attest(0, True)
    assert exc.value.error_args == (0, RoundStatus.OPEN)
    _round(c)
    finalize(c, 0, h32("m"))
    with pytest.raises(errors.NotActiveMember):
        c.outsiders[0].attest(0, True)
    with pytest.raises(errors.UnknownRound):
        auditor.attest(5, True)
    start = c.admin.block_number()
    auditor.attest(0, True)
    c.sites[2].attest(0, False)
    got = c.admin.attestations(start)
    assert [(a.round, a.auditor, a.ok) for a in got] == [
        (0, auditor.sender, True),
        (0, c.sites[2].sender, False),
    ]
    assert isinstance(got[0], Attestation) and got[0].block > start


def _receipt(c: Consortium, r: int, site: str, signer: LocalAccount, *, term: int | None = None) -> bytes:
    info = c.admin.round(r)
    committed = info.commit_of(site)
    assert committed is not None
    receipt = Receipt(r, info.term if term is None else term, site, committed.update_hash)
    return sign_receipt(signer, c.admin.address, c.admin.chain_id(), receipt)


def test_dispute_with_the_leaders_receipt(consortium: Consortium, accounts: list[LocalAccount]) -> None:
    c = consortium
    _round(c)
    info = c.admin.round(0)
    by_address = {a.address: a for a in accounts}
    leader_key = by_address[info.leader]  # type: ignore[index]
    dropped, kept = [a for a in info.committers if a != info.leader]
    with pytest.raises(errors.NotFinalized):
        c.site(dropped).dispute(0, _receipt(c, 0, dropped, leader_key))
    finalize(c, 0, h32("m"), included=[info.leader, kept])  # `dropped` is called NOT_DELIVERED
    site = c.site(dropped)

    stranger = Account.create()
    with pytest.raises(errors.ReceiptNotLeader) as exc:
        site.dispute(0, _receipt(c, 0, dropped, stranger))
    assert exc.value.error_args == (0, stranger.address, info.leader)
    with pytest.raises(errors.ReceiptNotLeader):  # a receipt for another term
        site.dispute(0, _receipt(c, 0, dropped, leader_key, term=2))
    other_hash = sign_receipt(
        leader_key, c.admin.address, c.admin.chain_id(), Receipt(0, 1, dropped, h32("something else"))
    )
    with pytest.raises(errors.ReceiptNotLeader):  # a receipt for another hash
        site.dispute(0, other_hash)
    with pytest.raises(errors.BadSignature):
        site.dispute(0, b"\1" * 64)
    with pytest.raises(errors.NoDeliveryClaim) as exc:  # an included site has nothing to dispute
        c.site(kept).dispute(0, _receipt(c, 0, kept, leader_key))
    assert exc.value.error_args == (0, kept, int(Outcome.INCLUDED))
    with pytest.raises(errors.NotCommitter):
        c.outsiders[0].dispute(0, _receipt(c, 0, dropped, leader_key))

    assert c.admin.disputes_against(info.leader) == 0  # type: ignore[arg-type]
    start = c.admin.block_number()
    site.dispute(0, _receipt(c, 0, dropped, leader_key))
    assert c.admin.disputes_against(info.leader) == 1  # type: ignore[arg-type]
    [recorded] = c.admin.disputes(start)
    assert (recorded.round, recorded.site, recorded.leader) == (0, dropped, info.leader)
    with pytest.raises(errors.AlreadyDisputed) as exc:
        site.dispute(0, _receipt(c, 0, dropped, leader_key))
    assert exc.value.error_args == (0, dropped)
    # A later round does not move the record: the dispute of a past round still finds its commit.
    _round(c, 1)
    finalize(c, 1, h32("m1"))
    assert c.admin.disputes_against(info.leader) == 1  # type: ignore[arg-type]


def test_elect_and_finalize_gas_at_8_members(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=8, min_peers=2, commit_window=50, reveal_window=10)
    worst_elect = worst_finalize = 0
    for r in range(3):
        for i, site in enumerate(c.sites):
            commit(site, r, h32(f"u{r}{i}"), 100 + i)
        worst_elect = max(worst_elect, int(elect(c, r)["gasUsed"]))
        info = c.admin.round(r)
        # Round 1 excludes sites (the outcome slot is written); rounds 0 and 2 include everyone.
        included = info.committers if r != 1 else info.committers[:4]
        worst_finalize = max(worst_finalize, int(finalize(c, r, h32(f"m{r}"), included)["gasUsed"]))
    assert worst_elect <= ELECT_GAS_LIMIT, worst_elect
    assert worst_finalize <= FINALIZE_GAS_LIMIT, worst_finalize
    print(f"elect {worst_elect} finalize {worst_finalize}")
