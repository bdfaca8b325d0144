"""The leader's exclusion reasons as the ledger's Outcome codes: the exchange names why it left a
committer out with a short label (exchange.excluded: "hash_mismatch", a merge/validate.py RejectReason
value, the masked-update check's "structure"); finalize carries one Outcome per commit.

A committer that neither arrived nor was excluded has no reason here: the finalize accounting calls it
NOT_DELIVERED. A label this table does not know is a failed validation (the update did arrive and was
refused), logged so a new label gets its own row.
"""

from __future__ import annotations

import logging
from typing import Protocol

from swarmd.ledger import Outcome
from swarmd.merge import RejectReason

log = logging.getLogger("swarmd.rounds")

HASH_MISMATCH = "hash_mismatch"
NOT_DELIVERED = "not_delivered"  # the leader's own word that it never got the update (DROP_UPDATE says it)
REJECTED_BY_RULE = "rejected_by_rule"  # a robust rule left the update out of the merge

_OUTCOMES: dict[str, Outcome] = {
    HASH_MISMATCH: Outcome.HASH_MISMATCH,
    NOT_DELIVERED: Outcome.NOT_DELIVERED,
    REJECTED_BY_RULE: Outcome.REJECTED_BY_RULE,
    RejectReason.LATE.value: Outcome.NOT_DELIVERED,  # arrived after the merge was taken
    "structure": Outcome.FAILED_VALIDATION,  # a masked update that is not the model's float tensors
    **{r.value: Outcome.FAILED_VALIDATION for r in RejectReason if r is not RejectReason.LATE},
}


class Excluding(Protocol):
    """What the reasons are read from: an exchange's `excluded` (address -> label)."""

    @property
    def excluded(self) -> dict[str, str]: ...


def exclusion_reason(label: str) -> Outcome:
    """The Outcome for one exclusion label."""
    outcome = _OUTCOMES.get(label)
    if outcome is None:
        log.warning("exclusion reason %r has no outcome of its own: reported as failed validation", label)
        return Outcome.FAILED_VALIDATION
    return outcome


def exclusion_reasons(exchange: Excluding) -> dict[str, Outcome]:
    """committer address -> the Outcome the leader reports for leaving it out."""
    return {site: exclusion_reason(label) for site, label in exchange.excluded.items()}
