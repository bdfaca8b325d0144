"""What a leader's finalize says about every committer, and this site's election secret.

`finalize_outcomes` turns what the leader knows after its exchange (who is in the merge, whose masks
were recovered, why others were left out) into the one Outcome per committer that the contract requires.
`round_secret` gives a committer its election secret for a round: fresh from `secrets` the first time,
written to the journal before the commit that carries its seal is sent, so a restarted site reveals it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from swarmd.daemon.store import Journal
from swarmd.ledger import Outcome, RoundInfo

# The exchange's exclusion reasons (exchange.Exchange.excluded) as finalize outcomes; any other reason is
# an update that arrived intact and failed a check.
REASONS: dict[str, Outcome] = {
    "hash_mismatch": Outcome.HASH_MISMATCH,
    "not_delivered": Outcome.NOT_DELIVERED,
    "rejected_by_rule": Outcome.REJECTED_BY_RULE,
}


def reason_outcome(reason: str) -> Outcome:
    """The Outcome of an exchange exclusion reason: its own code, else FAILED_VALIDATION."""
    return REASONS.get(reason, Outcome.FAILED_VALIDATION)


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
