"""What an audit of one round found (`RoundVerdict`), the exit status of a whole audit, and the named
errors for a round that cannot be asked about at all."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from swarmd.codec import hash_hex
from swarmd.errors import UsageError


class Status(str, Enum):
    VERIFIED = "verified"  # the recomputed merge (or unmasked sum) hashes to the finalized model
    MISMATCH = "MISMATCH"  # it does not, the leader included an update its own checks refuse, or its
    # unmask transcript contradicts the chain
    CANNOT_AUDIT = "cannot audit"  # an update or the unmask transcript could not be had (or read)


class AuditExit(IntEnum):
    """`swarm ledger audit`'s exit status. A mismatch wins over a round that could not be audited."""

    VERIFIED = 0  # every audited round verified
    MISMATCH = 10  # at least one round's merged model is not the merge of its included updates
    INCOMPLETE = 11  # no mismatch, but at least one round could not be audited


class UnknownRound(UsageError):
    """The chain has no such round (not opened yet)."""


class UnfinalizedRound(UsageError):
    """The round is open, electing, merging or abandoned: there is no merged model to check."""


@dataclass(frozen=True)
class RoundVerdict:
    round: int
    status: Status
    finalized: bytes | None = None  # the merged hash on chain
    recomputed: bytes | None = None  # the content hash of our recomputation
    reason: str = ""  # why MISMATCH or cannot audit
    rule: str = ""
    included: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # committer -> where its update came from

    def line(self) -> str:
        """One line for an operator or a log."""
        head = f"round {self.round}: "
        if self.status is Status.VERIFIED:
            return head + f"verified ({self.rule}, {self.included} updates) {_hex(self.finalized)}"
        if self.status is Status.MISMATCH:
            hashes = f"finalized {_hex(self.finalized)}, recomputed {_hex(self.recomputed)}"
            return head + f"MISMATCH: {self.reason + '; ' if self.reason else ''}{hashes}"
        return head + f"cannot audit: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {
            "round": self.round,
            "status": self.status.value,
            "finalized": _hex(self.finalized),
            "recomputed": _hex(self.recomputed),
            "reason": self.reason,
            "rule": self.rule,
            "included": self.included,
            "sources": dict(self.sources),
        }


def exit_status(verdicts: Iterable[RoundVerdict]) -> AuditExit:
    statuses = {v.status for v in verdicts}
    if Status.MISMATCH in statuses:
        return AuditExit.MISMATCH
    if Status.CANNOT_AUDIT in statuses:
        return AuditExit.INCOMPLETE
    return AuditExit.VERIFIED


def _hex(h: bytes | None) -> str:
    return hash_hex(h) if h else "-"
