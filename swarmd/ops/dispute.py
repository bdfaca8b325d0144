"""Disputing a round: publish the leader's delivery receipt this site kept against a finalize that called its
update not delivered (`swarm ledger dispute`).

Everything the contract would check is checked here first, from the chain and the receipt file, so that an
operator learns why a dispute cannot stand without paying for a reverted transaction: each refusal is a
named error with its own exit status (docs/operator.md lists them). The contract checks it all again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swarmd.errors import SwarmError
from swarmd.ledger import Dispute, Ledger, Outcome, RoundInfo, RoundStatus
from swarmd.ledger.receipt import BadReceipt, Receipt, receipt_signer

if TYPE_CHECKING:  # the daemon's modules pull in torch: `swarm ledger rounds` needs none of it
    from swarmd.daemon.receipts import ReceiptBook

AUDIT_HINT = "a receipt does not contradict it; `swarm ledger audit ROUND` recomputes the round"


class DisputeRefused(SwarmError):
    """A dispute this site cannot make; checked before anything is sent. Each subclass has its own status."""

    exit_code = 20


class NoReceipt(DisputeRefused):
    """This site keeps no receipt for the round: the leader never acknowledged its update."""

    exit_code = 20


class RoundNotFinalized(DisputeRefused):
    """The round is open, elected or abandoned: only a finalize can be disputed."""

    exit_code = 21


class NotACommitter(DisputeRefused):
    """This site did not commit in the round."""

    exit_code = 22


class NothingToDispute(DisputeRefused):
    """The finalize included this site's update."""

    exit_code = 23


class NotDisputable(DisputeRefused):
    """The finalize excluded this site for a reason a receipt does not contradict (validation, the robust
    rule, a missed reveal)."""

    exit_code = 24


class ReceiptMismatch(DisputeRefused):
    """The kept receipt is not the finalizing leader's for this site's commitment (another term, leader, site
    or hash): the contract would refuse it."""

    exit_code = 25


class RoundAlreadyDisputed(DisputeRefused):
    """This site's dispute of the round is already on chain."""

    exit_code = 26


# What `--all` expects after an honest round: nothing a receipt could contest (not a failure of the run).
ROUTINE_REFUSALS = (NothingToDispute, NotDisputable, RoundAlreadyDisputed, RoundNotFinalized, NotACommitter)


@dataclass(frozen=True)
class DisputeRecord:
    """A dispute the chain recorded: `site` against `leader` in `round`; the leader's count after it."""

    round: int
    site: str
    leader: str
    disputes_against: int
    block: int
    tx_hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "site": self.site,
            "leader": self.leader,
            "disputes_against": self.disputes_against,
            "block": self.block,
            "tx_hash": self.tx_hash,
        }


def _outcome_refusal(info: RoundInfo, me: str) -> DisputeRefused | None:
    r = info.round
    if info.status is not RoundStatus.FINALIZED:
        return RoundNotFinalized(
            f"round {r} is {info.status.name.lower()}, not finalized: there is no finalize to dispute",
            hint="wait for the round to finalize (`swarm ledger round ROUND`)",
        )
    if info.commit_of(me) is None:
        return NotACommitter(f"this site ({me}) did not commit in round {r}: it has nothing to dispute")
    outcome = info.outcome_of(me)
    if outcome is Outcome.INCLUDED:
        return NothingToDispute(f"round {r} included this site's update: nothing to dispute")
    if outcome is None or not outcome.delivery_claim:
        shown = "no outcome" if outcome is None else outcome.name
        return NotDisputable(f"round {r} excluded this site as {shown}", hint=AUDIT_HINT)
    return None


def _check_receipt(ledger: Ledger, info: RoundInfo, me: str, kept: tuple[Receipt, bytes] | None) -> bytes:
    """The signature to send: `kept` is the finalizing leader's receipt for exactly our commitment."""
    r = info.round
    if kept is None:
        raise NoReceipt(
            f"this site keeps no receipt for round {r}: the leader never acknowledged its update",
            hint="without the leader's signature a dispute cannot be made",
        )
    receipt, signature = kept
    commit = info.commit_of(me)
    assert commit is not None and info.leader is not None  # a finalized round we committed in
    expected = Receipt(r, info.term, me, commit.update_hash)
    if receipt.term != info.term:
        raise ReceiptMismatch(
            f"the receipt for round {r} is from term {receipt.term}; the round was finalized in term "
            f"{info.term}, whose leader gave this site none"
        )
    if receipt.site.lower() != me.lower() or receipt.update_hash != commit.update_hash:
        raise ReceiptMismatch(
            f"the receipt for round {r} is for site {receipt.site} and hash 0x{receipt.update_hash.hex()}, "
            f"not this site's commitment ({me}, 0x{commit.update_hash.hex()})"
        )
    try:
        signer = receipt_signer(ledger.address, ledger.chain_id(), expected, signature)
    except BadReceipt as exc:
        raise ReceiptMismatch(f"the receipt for round {r}: {exc}") from None
    if signer.lower() != info.leader.lower():
        raise ReceiptMismatch(
            f"the receipt for round {r} was signed by {signer}, not by the round's leader {info.leader} "
            "(or for another chain or contract)"
        )
    return signature


def prepare_dispute(ledger: Ledger, book: ReceiptBook, me: str, r: int) -> tuple[RoundInfo, bytes]:
    """Check that this site (`me`) can dispute round `r` with the receipt `book` keeps; the round and the
    signature to send. Raises a DisputeRefused subclass (or ChainUnavailable, CorruptReceipt) otherwise."""
    info = ledger.round(r)
    refusal = _outcome_refusal(info, me)
    if refusal is not None:
        raise refusal
    assert info.finalized_block is not None
    for d in ledger.disputes(info.finalized_block):
        if d.round == r and d.site.lower() == me.lower():
            raise RoundAlreadyDisputed(
                f"this site already disputed round {r} (block {d.block}, against {d.leader})"
            )
    return info, _check_receipt(ledger, info, me, book.get(r))


def dispute(ledger: Ledger, book: ReceiptBook, r: int) -> DisputeRecord:
    """Check, then send this site's dispute of round `r`; what the chain recorded."""
    me = ledger.sender
    if me is None:
        raise SwarmError("disputing needs the site's account key")  # a read-only client: a caller's bug
    info, signature = prepare_dispute(ledger, book, me, r)
    tx = ledger.dispute(r, signature)
    leader = str(info.leader)
    return DisputeRecord(
        r,
        me,
        leader,
        ledger.disputes_against(leader),
        int(tx["blockNumber"]),
        "0x" + bytes(tx["transactionHash"]).hex(),
    )


def disputable_rounds(book: ReceiptBook, current: int) -> list[int]:
    """The rounds `--all` tries: every round this site keeps a receipt file for, up to the current one."""
    return [r for r in book.rounds() if r <= current]


def dispute_all(
    ledger: Ledger, book: ReceiptBook, rounds: Iterable[int]
) -> list[tuple[int, DisputeRecord | SwarmError]]:
    """Each of `rounds` disputed where it can be; a round's refusal does not stop the others (an unreachable
    chain does: it would refuse them all)."""
    from swarmd.errors import ChainUnavailable

    out: list[tuple[int, DisputeRecord | SwarmError]] = []
    for r in rounds:
        try:
            out.append((r, dispute(ledger, book, r)))
        except ChainUnavailable:
            raise
        except SwarmError as exc:
            out.append((r, exc))
    return out


def disputes_by_round(ledger: Ledger) -> dict[int, list[Dispute]]:
    """round -> its recorded disputes in chain order (Disputed events from the deploy block)."""
    out: dict[int, list[Dispute]] = {}
    for d in ledger.disputes(ledger.binding_info().deploy_block):
        out.setdefault(d.round, []).append(d)
    return out


def dispute_text(disputes: Iterable[Dispute], names: Mapping[str, str]) -> str:
    """`b against a, c against a` by site name (`names`: lowercase account -> name); `-` if none."""

    def label(account: str) -> str:
        return names.get(account.lower(), account[:12])

    return ", ".join(f"{label(d.site)} against {label(d.leader)}" for d in disputes) or "-"
