"""Recompute one finalized round exactly as its leader had to, and compare the result with the chain.

The leader accepts an update only when its content hash equals the commitment and it passes
`merge.validate` against the round's base model (names, shapes, dtypes, finite values, the task's
norm bound); it then folds the accepted updates in address order with the task's rule, applies the
merged diff to the base when the task sends diffs, and finalizes the content hash of the result.
The audit does the same with the updates the chain lists as included, plus those it marks
REJECTED_BY_RULE (a robust rule must then reject exactly those, else MISMATCH). Merges are reproducible (see
`swarmd.merge`), so an honest leader's model and the audit's hash to the same value; any other
model is a MISMATCH. A leader that included an update its own checks refuse is a MISMATCH too, and
so is one that excluded an update as FAILED_VALIDATION which passes them (that update is fetched from
its owner; when no one serves it, the claim is left unchecked and logged). A
secure-aggregation round is recomputed from its masked updates and the leader's unmask transcript
(`audit.secure`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch

from swarmd.audit.cyclic import audit_cyclic
from swarmd.audit.fetch import UpdateSource, UpdateUnavailable
from swarmd.audit.secure import KeySets, audit_secure
from swarmd.audit.verdict import RoundVerdict, Status, UnfinalizedRound
from swarmd.codec import hash_against
from swarmd.compress import NONE, Encoding, decompressed
from swarmd.errors import InvalidUpdate, MergeError
from swarmd.ledger import CommitInfo, Outcome, RoundInfo, RoundStatus
from swarmd.merge import Update, apply_diff, rule_for, validate
from swarmd.merge.base import address_order
from swarmd.task import SwarmSettings, WeightKind

log = logging.getLogger("swarmd.audit")


async def audit_round(
    info: RoundInfo,
    swarm: SwarmSettings,
    source: UpdateSource,
    keysets: KeySets | None = None,
    *,
    cyclic: bool = False,
    sharded: bool = False,
    encoding: Encoding = NONE,
) -> RoundVerdict:
    """The verdict on one round. Raises UnfinalizedRound when it has no merged model yet. `keysets`:
    what a secure-aggregation round's audit needs (without it such a round cannot be audited); `cyclic`:
    the task's rounds are cyclic (`audit.cyclic` checks the path's hashes: nothing was merged); `sharded`:
    the commitments are Merkle roots of leaves (`UpdateSource.sharded_update`); the merge is the same.
    `encoding`: the task's `[exchange] compression`; stored updates are decoded as the leader did."""
    if info.status is not RoundStatus.FINALIZED or info.merged_hash is None:
        raise UnfinalizedRound(
            f"round {info.round} is {info.status.name.lower()}, not finalized: no merged model to check"
        )
    if cyclic:
        return await audit_cyclic(info, source)
    finalized = info.merged_hash
    if info.key_count:  # masked updates: redo the leader's unmasking from its transcript
        verdict = await audit_secure(info, swarm, source, keysets)
        log.info("%s", verdict.line())
        return verdict
    rule = rule_for(swarm)
    is_diff = swarm.send == WeightKind.DIFF
    commits = {c.site: c for c in info.commits}
    sources: dict[str, str] = {}
    try:
        base, _ = await source.get(info.base_hash, [info.leader, *commits], "the base model")
        rule.begin(base)
        # A robust rule's rejections are part of its result: the sites finalized REJECTED_BY_RULE go
        # into the rule too, which must then leave out exactly those (Krum's unselected).
        marked = {
            c.site for c, o in zip(info.commits, info.outcomes, strict=False) if o is Outcome.REJECTED_BY_RULE
        }
        for site in sorted({*info.included, *marked}, key=address_order):
            commit = commits[site]
            state, sources[site] = await _committed(source, info, commit, sharded)
            rule.add(Update(site, _leaders_checks(state, base, swarm, site, encoding), commit.n_samples))
            del state
        merged = rule.result()
        rejected = {a.lower() for a in rule.rejected}
        disagree = (
            ""
            if rejected == {a.lower() for a in marked}
            else f"the rule rejects {sorted(rejected) or 'none'}, the leader marked "
            f"{sorted(a.lower() for a in marked) or 'none'} REJECTED_BY_RULE"
        ) or await _valid_but_excluded(info, swarm, base, source, encoding, sharded)
        if is_diff:
            merged = apply_diff(base, merged)
    except UpdateUnavailable as exc:
        return RoundVerdict(info.round, Status.CANNOT_AUDIT, finalized, reason=str(exc), rule=rule.name)
    except InvalidUpdate as exc:
        reason = f"the leader included an update its own checks refuse ({exc.reason}): {exc}"
        return RoundVerdict(
            info.round, Status.MISMATCH, finalized, reason=reason, rule=rule.name, sources=sources
        )
    except MergeError as exc:
        return RoundVerdict(info.round, Status.CANNOT_AUDIT, finalized, reason=str(exc), rule=rule.name)
    recomputed = hash_against(merged, finalized)
    status = Status.VERIFIED if recomputed == finalized and not disagree else Status.MISMATCH
    reason = disagree or (
        "" if status is Status.VERIFIED else "the finalized model is not the merge of the included updates"
    )
    verdict = RoundVerdict(
        info.round, status, finalized, recomputed, reason, rule.name, len(info.included), sources
    )
    log.info("%s", verdict.line())
    return verdict


async def _committed(
    source: UpdateSource, info: RoundInfo, commit: CommitInfo, sharded: bool
) -> tuple[dict[str, torch.Tensor], str]:
    """A committer's update held to its commitment, from its holders (the committer, the leader), and
    where it came from. A sharded round's committer alone holds its whole update."""
    if sharded:
        return await source.sharded_update(info.round, commit.site, commit.update_hash)
    return await source.get(commit.update_hash, [commit.site, info.leader], f"the update of {commit.site}")


def _leaders_checks(
    state: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor],
    swarm: SwarmSettings,
    site: str,
    encoding: Encoding,
) -> Mapping[str, torch.Tensor]:
    """The checks the leader runs on an update before it accepts it; raises InvalidUpdate. Returns the
    update as the merge reads it (decoded, tensor by tensor, when it travelled compressed)."""
    is_diff = swarm.send == WeightKind.DIFF
    reference = None if is_diff else base
    view = decompressed(state, base, encoding, site)
    validate(view, base, norm_bound=swarm.norm_bound, reference=reference, is_diff=is_diff, sender=site)
    return view


async def _valid_but_excluded(
    info: RoundInfo,
    swarm: SwarmSettings,
    base: dict[str, torch.Tensor],
    source: UpdateSource,
    encoding: Encoding,
    sharded: bool,
) -> str:
    """Why the leader's FAILED_VALIDATION claims are false ("" when none is): each such update is
    fetched and put through the same checks; one that passes them was excluded without cause."""
    passed = []
    for c, o in zip(info.commits, info.outcomes, strict=False):
        if o is not Outcome.FAILED_VALIDATION:
            continue
        try:
            state, _ = await _committed(source, info, c, sharded)
        except UpdateUnavailable as exc:
            log.warning(
                "round %d: the failed-validation claim on %s is unchecked: %s", info.round, c.site, exc
            )
            continue
        try:
            _leaders_checks(state, base, swarm, c.site, encoding)
        except InvalidUpdate:
            continue
        passed.append(c.site)
    if not passed:
        return ""
    sites = ", ".join(passed)
    return f"the leader excluded {sites} as FAILED_VALIDATION; the committed update passes the checks"


async def audit_rounds(
    infos: Iterable[RoundInfo],
    swarm: SwarmSettings,
    source: UpdateSource,
    keysets: KeySets | None = None,
    *,
    cyclic: bool = False,
    sharded: bool = False,
    encoding: Encoding = NONE,
) -> list[RoundVerdict]:
    """Verdicts on every finalized round among `infos`; rounds without a merged model are skipped."""
    out = []
    for info in infos:
        if info.status is RoundStatus.FINALIZED:
            verdict = await audit_round(
                info, swarm, source, keysets, cyclic=cyclic, sharded=sharded, encoding=encoding
            )
            out.append(verdict)
    return out
