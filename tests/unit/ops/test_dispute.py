"""What `swarm ledger dispute` refuses from the chain's facts alone, before it reads a receipt: for every
finalize outcome and round status, the named refusal (or none: a delivery claim a receipt can contest);
how a round's disputes read by site name; and which refusals `--all` counts as routine."""

from __future__ import annotations

import pytest

from swarmd.ledger import CommitInfo, Dispute, Outcome, RoundInfo, RoundStatus
from swarmd.ops.dispute import (
    ROUTINE_REFUSALS,
    NotACommitter,
    NotDisputable,
    NothingToDispute,
    ReceiptMismatch,
    RoundNotFinalized,
    _outcome_refusal,
    dispute_text,
)

ME, LEADER = "0x" + "aa" * 20, "0x" + "bb" * 20


def _round(outcome: Outcome, status: RoundStatus = RoundStatus.FINALIZED) -> RoundInfo:
    commits = (CommitInfo(LEADER, b"\1" * 32, 5, 3), CommitInfo(ME, b"\2" * 32, 5, 4))
    finalized = status is RoundStatus.FINALIZED
    outcomes = (Outcome.INCLUDED, outcome) if finalized else ()
    return RoundInfo(
        0, status, 1, LEADER, commits, (), b"\0" * 32, None, (LEADER,), 1, 3, 5, 9, outcomes=outcomes
    )


@pytest.mark.parametrize(
    ("outcome", "refusal"),
    [
        (Outcome.INCLUDED, NothingToDispute),
        (Outcome.NOT_DELIVERED, None),
        (Outcome.HASH_MISMATCH, None),
        (Outcome.RECOVERED, None),
        (Outcome.FAILED_VALIDATION, NotDisputable),
        (Outcome.REJECTED_BY_RULE, NotDisputable),
        (Outcome.NOT_REVEALED, NotDisputable),
    ],
)
def test_each_outcome_is_disputable_only_as_a_delivery_claim(outcome: Outcome, refusal: type | None) -> None:
    got = _outcome_refusal(_round(outcome), ME.upper().replace("0X", "0x"))  # addresses compare caselessly
    assert (type(got) if got else None) is refusal
    if refusal is NotDisputable:
        assert got is not None and outcome.name in str(got) and "swarm ledger audit" in str(got)


@pytest.mark.parametrize("status", [RoundStatus.OPEN, RoundStatus.ELECTED, RoundStatus.ABANDONED])
def test_only_a_finalized_round_can_be_disputed(status: RoundStatus) -> None:
    got = _outcome_refusal(_round(Outcome.NOT_DELIVERED, status), ME)
    assert isinstance(got, RoundNotFinalized) and status.name.lower() in str(got)


def test_a_site_that_did_not_commit_has_nothing_to_dispute() -> None:
    assert isinstance(_outcome_refusal(_round(Outcome.NOT_DELIVERED), "0x" + "cc" * 20), NotACommitter)


def test_each_refusal_exits_with_its_own_status() -> None:
    from swarmd.ops import dispute

    codes = [
        c.exit_code
        for c in vars(dispute).values()
        if isinstance(c, type) and issubclass(c, dispute.DisputeRefused)
    ]
    assert len(codes) == 8 and len(set(codes)) == 7  # the base shares NoReceipt's 20
    assert ReceiptMismatch not in ROUTINE_REFUSALS and NothingToDispute in ROUTINE_REFUSALS


def test_disputes_read_by_site_name() -> None:
    ds = [Dispute(0, ME, LEADER, 7), Dispute(0, "0x" + "cc" * 20, LEADER, 8)]
    assert dispute_text(ds, {ME: "b", LEADER: "a"}) == "b against a, 0xcccccccccc against a"
    assert dispute_text([], {}) == "-"
