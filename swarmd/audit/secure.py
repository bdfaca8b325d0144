"""The audit of a secure-aggregation round: redo the leader's unmasking from the masked inputs and its
transcript, and compare the result with the finalized model.

The survivors S are the chain's included committers; each one's masked update is fetched and held to its
commitment (the hash on chain is the masked update's). The leader's transcript (`swarmd.privacy.
transcript`: S's self-mask seeds, the dropped sites' mask keys, survivor-absent pair seeds) is fetched by
the id derived from (round, term, finalized hash) and checked against the round: its sets are the
chain's, and every mask key is the one its site advertised on chain (`public_of`). The masks are then
subtracted with `swarmd.privacy`'s own functions, in the Unmasker's arithmetic, decoded, assembled as
the leader assembles them (`merge.with_unmasked`, then `apply_diff` for diffs), and hashed.

What this proves, and what a self-mask seed it cannot check can and cannot hide, is in docs/protocol.md
("What an auditor can check").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from swarmd.audit.fetch import TranscriptUnavailable, UpdateSource, UpdateUnavailable
from swarmd.audit.verdict import RoundVerdict, Status
from swarmd.codec import hash_against
from swarmd.ledger import AdvertisedKeys, RoundInfo
from swarmd.merge import apply_diff, with_unmasked
from swarmd.privacy import (
    Advertised,
    BadTranscript,
    SecAggError,
    SecAggParams,
    UnmaskTranscript,
    graph_seed,
    masked_total,
    neighbourhood,
    transcript_id,
    unmask_sum,
)
from swarmd.privacy.view import RoundView
from swarmd.task import SwarmSettings, WeightKind

RULE = "secure sum"
MISSING_FACTS = "the round used secure aggregation and this audit was given no privacy settings or key sets"


@dataclass(frozen=True)
class KeySets:
    """What a secure round's audit needs besides the task's swarm settings: the `[privacy]` settings
    (fixed point, graph degree) and the chain's advertised key sets of a round."""

    params: SecAggParams
    advertised: Callable[[int], Sequence[AdvertisedKeys | Advertised]]


class _Mismatch(Exception):
    """The round's inputs are in hand and contradict the finalized model (internal to this module)."""


async def audit_secure(
    info: RoundInfo, swarm: SwarmSettings, source: UpdateSource, keysets: KeySets | None
) -> RoundVerdict:
    """The verdict on one finalized secure-aggregation round."""
    finalized = info.merged_hash
    if keysets is None:
        return RoundVerdict(info.round, Status.CANNOT_AUDIT, finalized, reason=MISSING_FACTS, rule=RULE)
    sources: dict[str, str] = {}
    try:
        merged = await _recompute(info, swarm, source, keysets, sources)
    except (UpdateUnavailable, TranscriptUnavailable) as exc:
        return RoundVerdict(info.round, Status.CANNOT_AUDIT, finalized, reason=str(exc), rule=RULE)
    except BadTranscript as exc:
        if exc.reason in ("malformed", "version", "too_large"):
            why = f"the unmask transcript is unreadable ({type(exc).__name__}): {exc}"
            return RoundVerdict(info.round, Status.CANNOT_AUDIT, finalized, reason=why, rule=RULE)
        why = f"the leader's unmask transcript does not fit the round ({exc.reason}): {exc}"
        return _mismatch(info, why, sources)
    except (_Mismatch, SecAggError) as exc:
        return _mismatch(info, str(exc), sources)
    recomputed = hash_against(merged, finalized)
    ok = recomputed == finalized
    reason = "" if ok else "the finalized model is not the unmasked sum of the included masked updates"
    status = Status.VERIFIED if ok else Status.MISMATCH
    return RoundVerdict(info.round, status, finalized, recomputed, reason, RULE, len(info.included), sources)


def _mismatch(info: RoundInfo, reason: str, sources: dict[str, str]) -> RoundVerdict:
    return RoundVerdict(
        info.round, Status.MISMATCH, info.merged_hash, reason=reason, rule=RULE, sources=sources
    )


async def _recompute(
    info: RoundInfo, swarm: SwarmSettings, source: UpdateSource, keysets: KeySets, sources: dict[str, str]
) -> dict[str, torch.Tensor]:
    r, merged_hash = info.round, info.merged_hash or b""
    advertised = [Advertised(a.site, a.mask_pk, a.enc_pk) for a in keysets.advertised(r)]
    graph = neighbourhood(advertised, graph_seed(r, info.base_hash), keysets.params.neighbours)
    view = RoundView.of(r, advertised, graph)
    committed = {c.site.lower(): c.n_samples for c in info.commits}
    raw, _ = await source.transcript(r, transcript_id(r, info.term, merged_hash), info.leader)
    transcript = UnmaskTranscript.from_bytes(raw)
    if transcript.leader != (info.leader or "").lower() or transcript.survivors != _lower(info.included):
        raise BadTranscript("sets", "its leader or survivors are not the chain's leader and included sites")
    if transcript.dropped != _lower(info.recovered):
        raise BadTranscript("sets", "its dropped sites are not the chain's recovered ones")
    base, _ = await source.get(info.base_hash, [info.leader, *info.included], "the base model")
    floats = {k: v for k, v in base.items() if v.is_floating_point()}
    masked: dict[str, dict[str, np.ndarray]] = {}
    commits = {c.site.lower(): c for c in info.commits}
    for site in transcript.survivors:
        state, sources[site] = await source.get(
            commits[site].update_hash, [site, info.leader], f"the masked update of {site}"
        )
        masked[site] = _ring(site, state, floats)
    mean = unmask_sum(masked_total(masked), transcript, view, committed, keysets.params)
    is_diff = swarm.send == WeightKind.DIFF
    out = with_unmasked(base, {k: torch.from_numpy(v) for k, v in mean.items()}, is_diff=is_diff)
    return apply_diff(base, out) if is_diff else out


def _ring(
    site: str, state: Mapping[str, torch.Tensor], floats: Mapping[str, torch.Tensor]
) -> dict[str, np.ndarray]:
    """A masked update as uint32 ring elements, after the leader's own check: exactly the base's float
    tensors, each int32 of the base's shape. One that fails it could not have been merged."""
    if set(state) != set(floats) or any(
        state[k].dtype != torch.int32 or state[k].shape != b.shape for k, b in floats.items()
    ):
        raise _Mismatch(f"the leader included a masked update of {site} its own checks refuse (structure)")
    return {k: v.numpy().view(np.uint32) for k, v in state.items()}


def _lower(sites: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(s.lower() for s in sites))
