"""What auditors said about rounds: the Attested events of a ledger, grouped by round, and the rounds whose
audit failed. `swarm ledger rounds`/`round`/`verify` show them and `swarm model export` warns about them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from swarmd.ledger import Attestation, Ledger


def attestations_by_round(ledger: Ledger) -> dict[int, list[Attestation]]:
    """round -> its attestations in chain order (from the deploy block: an auditor may attest any time)."""
    out: dict[int, list[Attestation]] = {}
    for a in ledger.attestations(ledger.binding_info().deploy_block):
        out.setdefault(a.round, []).append(a)
    return out


def failed_audits(by_round: Mapping[int, list[Attestation]], rounds: Iterable[int]) -> dict[int, list[str]]:
    """round -> the auditors whose attestation of it failed, for the `rounds` that have any."""
    failed = {r: [a.auditor for a in by_round.get(r, []) if not a.ok] for r in rounds}
    return {r: auditors for r, auditors in failed.items() if auditors}


def attestation_text(atts: Iterable[Attestation], names: Mapping[str, str]) -> str:
    """`ok: a, b; failed: c` with auditors by site name (`names`: lowercase account -> name); `-` if none."""
    ok = [names.get(a.auditor.lower(), a.auditor[:12]) for a in atts if a.ok]
    bad = [names.get(a.auditor.lower(), a.auditor[:12]) for a in atts if not a.ok]
    parts = ([f"ok: {', '.join(ok)}"] if ok else []) + ([f"failed: {', '.join(bad)}"] if bad else [])
    return "; ".join(parts) or "-"
