"""finalize_outcomes: the one Outcome per committer that a leader's finalize gives (NOT_REVEALED first, as
the contract requires), and the election secret a committer journals before its commit."""

from __future__ import annotations

from pathlib import Path

from swarmd.daemon.accounting import exclusion_reason, finalize_outcomes, kept_secret, round_secret
from swarmd.daemon.store import Journal
from swarmd.ledger import CommitInfo, Outcome, RoundInfo, RoundStatus

A, B, C, D, E = ("0x" + c * 40 for c in "abcde")


def _info(revealed: tuple[str, ...]) -> RoundInfo:
    commits = tuple(CommitInfo(s, bytes([i + 1]) * 32, 4, 2) for i, s in enumerate((A, B, C, D, E)))
    return RoundInfo(
        round=3, status=RoundStatus.ELECTED, term=1, leader=A, commits=commits, failed_leaders=(),
        base_hash=b"\0" * 32, merged_hash=None, included=(), opened_block=1, first_commit_block=2,
        elected_block=10, finalized_block=None, revealed=revealed,
    )  # fmt: skip


def test_every_committer_gets_one_outcome() -> None:
    info = _info(revealed=(A, B, C, D))
    reasons = {C.upper().replace("0X", "0x"): Outcome.HASH_MISMATCH}  # addresses compare case-insensitively
    got = finalize_outcomes(info, included=[A], recovered=[B], reasons=reasons)
    assert got == {
        A: Outcome.INCLUDED,
        B: Outcome.RECOVERED,
        C: Outcome.HASH_MISMATCH,
        D: Outcome.NOT_DELIVERED,  # revealed, no reason known: its update never arrived
        E: Outcome.NOT_REVEALED,
    }
    assert list(got) == list(info.committers)


def test_not_revealed_wins_over_what_the_leader_knows() -> None:
    """A secure-aggregation leader recovers a non-revealer's masks like a dropout's; the contract still
    requires NOT_REVEALED for it, or the finalize reverts."""
    got = finalize_outcomes(
        _info(revealed=(A,)), included=[A, B], recovered=[C], reasons={D: Outcome.FAILED_VALIDATION}
    )
    assert got == {A: Outcome.INCLUDED} | dict.fromkeys((B, C, D, E), Outcome.NOT_REVEALED)


def test_exchange_reasons_map_to_outcomes() -> None:
    assert exclusion_reason("hash_mismatch") is Outcome.HASH_MISMATCH
    assert exclusion_reason("non_finite") is Outcome.FAILED_VALIDATION  # any check an intact update failed
    assert exclusion_reason("norm_bound") is Outcome.FAILED_VALIDATION


def test_the_secret_is_journaled_once_and_survives_a_restart(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.json")
    assert kept_secret(journal, 4) is None
    secret = round_secret(journal, 4)
    assert len(secret) == 32 and round_secret(journal, 4) == secret  # a retried commit keeps its seal
    assert round_secret(journal, 5) != secret  # a fresh one per round
    again = Journal.open(tmp_path / "journal.json")  # a restarted daemon reveals what it committed
    assert kept_secret(again, 4) == secret
    assert secret.hex() not in repr(again.get(4))  # never in a log line
