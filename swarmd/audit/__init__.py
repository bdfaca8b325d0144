"""Recompute a finalized round from its committed updates and compare it with the chain (`swarm ledger
audit`).

`fetch` gets the round's base model and each included committer's update (from this site's store,
else from its owner, else from the round's leader) and checks each against its on-chain commitment;
`recompute` folds them with the task's rule, after the leader's own validation, in address order
(the merges are reproducible, see `swarmd.merge`), and compares the content hash with the finalized
one; `secure` does it for a secure-aggregation round from the masked updates and the leader's unmask
transcript; `cyclic` checks a cyclic round's path of hashes (nothing is merged there); `verdict` holds
the outcome of one round. Imports `ledger`, `transport`, `merge`,
`privacy`, `checkpoint`, `codec`, `task` and `errors`, never `daemon`.
"""

from swarmd.audit.fetch import TranscriptUnavailable, UpdateSource, UpdateUnavailable
from swarmd.audit.recompute import audit_round, audit_rounds
from swarmd.audit.secure import KeySets
from swarmd.audit.verdict import (
    AuditExit,
    RoundVerdict,
    Status,
    UnfinalizedRound,
    UnknownRound,
    exit_status,
)

__all__ = [
    "AuditExit",
    "KeySets",
    "RoundVerdict",
    "Status",
    "TranscriptUnavailable",
    "UnfinalizedRound",
    "UnknownRound",
    "UpdateSource",
    "UpdateUnavailable",
    "audit_round",
    "audit_rounds",
    "exit_status",
]
