"""What a leader's finalize says about every committer, and this site's election secret.

`finalize_outcomes` turns what the leader knows after its exchange (who is in the merge, whose masks
were recovered, why others were left out) into the one Outcome per committer that the contract requires;
`exclusion_reasons` reads the why: the exchange names it with a short label (exchange.excluded:
"hash_mismatch", a merge/validate.py RejectReason value, the masked-update check's "structure"). A label
this table does not know is a failed validation (the update did arrive and was refused), logged so a new
label gets its own row; a committer that neither arrived nor was excluded is NOT_DELIVERED.
`round_secret` gives a committer its election secret for a round: fresh from `secrets` the first time,
written to the journal before the commit that carries its seal is sent, so a restarted site reveals it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Protocol

from swarmd.daemon.store import Journal
from swarmd.ledger import Outcome, RoundInfo
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
    "compression": Outcome.FAILED_VALIDATION,  # not the encoding the task declares (swarmd.compress)
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


def finalize_outcomes(
    info: RoundInfo,
    included: Iterable[str],
    recovered: Iterable[str],
    reasons: Mapping[str, Outcome],
) -> dict[str, Outcome]:
    """committer -> Outcome for round `info` (every committer, keyed by its commit's address).

    NOT_REVEALED comes first because the contract requires it for exactly the non-revealers (the leader
    never merges their updates); then INCLUDED, RECOVERED, the leader's reason, else NOT_DELIVERED."""
    low_included = {a.lower() for a in included}
    low_recovered = {a.lower() for a in recovered}
    low_reasons = {a.lower(): o for a, o in reasons.items()}
    revealed = {a.lower() for a in info.revealed}
    out: dict[str, Outcome] = {}
    for site in info.committers:
        low = site.lower()
        if low not in revealed:
            out[site] = Outcome.NOT_REVEALED
        elif low in low_included:
            out[site] = Outcome.INCLUDED
        elif low in low_recovered:
            out[site] = Outcome.RECOVERED
        else:
            out[site] = low_reasons.get(low, Outcome.NOT_DELIVERED)
    return out


def round_secret(journal: Journal, r: int) -> bytes:
    """This site's election secret for round `r`: the journal's, else a fresh one journaled first."""
    kept = journal.get(r).election_secret
    if kept:
        return bytes.fromhex(kept.removeprefix("0x"))
    secret = secrets.token_bytes(32)
    journal.update(r, election_secret="0x" + secret.hex())
    return secret


def kept_secret(journal: Journal, r: int) -> bytes | None:
    """The journaled secret of round `r`, or None (a journal lost since the commit)."""
    kept = journal.get(r).election_secret
    return bytes.fromhex(kept.removeprefix("0x")) if kept else None
