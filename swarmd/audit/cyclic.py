"""The audit of a cyclic round (`[round] mode = "cyclic"`): nothing was merged, so there is no merge to
recompute; what can be checked is the chain of hashes the path left on the ledger.

Verified means: the commits follow the order drawn from the round's base hash (a path that only skipped
sites), the finalized model is the model of the path's last included commit and no commit before it is
marked excluded (`swarmd.ledger.cyclic.finalized_path_problem`), and every included commit's model can be
fetched, hashes to its commitment and passes the leader's structure checks against the base model. Not
checked, because training is not recomputed: that each site trained from the model before it (each
receiver checked the hash it took against the sender's commit, but says so only in its own journal).
"""

from __future__ import annotations

import logging

from swarmd.audit.fetch import UpdateSource, UpdateUnavailable
from swarmd.audit.verdict import RoundVerdict, Status
from swarmd.errors import InvalidUpdate
from swarmd.ledger import RoundInfo
from swarmd.ledger.cyclic import finalized_path_problem
from swarmd.merge import validate

log = logging.getLogger("swarmd.audit")

RULE = "cyclic"


async def audit_cyclic(info: RoundInfo, source: UpdateSource) -> RoundVerdict:
    """The verdict on one finalized cyclic round."""
    finalized = info.merged_hash
    problem = finalized_path_problem(info)
    if problem:
        return RoundVerdict(info.round, Status.MISMATCH, finalized, reason=problem, rule=RULE)
    sources: dict[str, str] = {}
    try:
        base, _ = await source.get(info.base_hash, [info.leader, *info.included], "the base model")
        for c in info.commits:
            if c.site not in info.included:
                continue
            state, sources[c.site] = await source.get(
                c.update_hash, [c.site, info.leader], f"the model of {c.site}"
            )
            validate(state, base, sender=c.site)
            del state
    except UpdateUnavailable as exc:
        return RoundVerdict(info.round, Status.CANNOT_AUDIT, finalized, reason=str(exc), rule=RULE)
    except InvalidUpdate as exc:
        reason = f"a model on the path fails the structure checks ({exc.reason}): {exc}"
        return RoundVerdict(info.round, Status.MISMATCH, finalized, reason=reason, rule=RULE, sources=sources)
    verdict = RoundVerdict(
        info.round, Status.VERIFIED, finalized, finalized, "", RULE, len(info.included), sources
    )
    log.info("%s", verdict.line())
    return verdict
