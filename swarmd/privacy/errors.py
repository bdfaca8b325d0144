"""The named errors of secure aggregation: one `SecAggError` family, each refusal with a stable reason.

Every malformed, stale, replayed, forged or over-reaching input raises a subclass; `reason` is a short
label (`"round"`, `"tampered"`, `"double_reveal"`, ...) that the vault counts and the daemon exports as
a metric label. They are wire errors (exit 7): what goes wrong here comes from a peer or the leader.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from swarmd.errors import WireError

log = logging.getLogger("swarmd.privacy")
P = ParamSpec("P")
R = TypeVar("R")


class SecAggError(WireError):
    """Secure aggregation refused an input or cannot go on. `reason` is a stable label for metrics."""

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"secure aggregation ({reason}): {message}", hint=hint)


class BadSecrets(SecAggError):
    """This site's own round secrets are missing, unreadable, or belong to another round or site."""


class BadShare(SecAggError):
    """A share message is malformed, for another round or recipient, from a non-neighbour, or tampered."""


class BadRequest(SecAggError):
    """A leader's reveal request is malformed, misaddressed, or asks for what the protocol forbids."""


class DoubleReveal(BadRequest):
    """A request would reveal both the self-mask share and the mask-key share of one peer in one round:
    with both, the leader could strip every mask from that peer's update. Refused whole."""


class ReplayedRequest(BadRequest):
    """A request from a leader term older than one already answered, or a different request under a term
    already answered."""


class BadResponse(SecAggError):
    """A survivor's reveal response is malformed, unasked for, duplicated, or for another round or term."""


class InconsistentShares(SecAggError):
    """Shares of one secret do not lie on one polynomial, or rebuild a key that does not match the chain."""


class BadUpdate(SecAggError):
    """A (masked) update has the wrong names, shapes, dtype, sample count or non-finite values."""


class BelowThreshold(SecAggError):
    """Too few shares reached the leader to remove every mask: the round cannot be unmasked.
    `missing` says what is still short, secret by secret."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        shown = "; ".join(missing[:8]) + (f"; and {len(missing) - 8} more" if len(missing) > 8 else "")
        super().__init__("below_threshold", f"cannot unmask: {shown}", hint="the round is excluded")


class BadTranscript(SecAggError):
    """An unmask transcript is malformed, or does not fit the round: other sets, a missing or extra
    secret, or a mask key that is not the one advertised on chain (`reason` says which)."""


class BadVaultState(SecAggError):
    """A persisted vault file is unreadable. Fails closed: without its reveal record the round is never
    answered again (a fresh record could reveal the other secret of a peer)."""


class _Counts(Protocol):
    refusals: Counter[str]


C = TypeVar("C", bound=_Counts)


def counted(method: Callable[Concatenate[C, P], R]) -> Callable[Concatenate[C, P], R]:
    """Count (in `self.refusals`, by reason) and log every SecAggError the method raises, then re-raise."""

    @functools.wraps(method)
    def wrapper(self: C, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except SecAggError as exc:
            self.refusals[exc.reason] += 1
            log.warning("secure aggregation refused: %s", exc)
            raise

    return wrapper
