"""Per-peer budgets: token buckets for the messages, bytes and decode CPU each peer may cost us.

A peer's frame is admitted only while all three of its buckets allow it: one message, its bytes,
and a CPU bucket that is not in debt (decode time is charged after the fact, so one expensive frame
can overdraw it and the frames after it wait until it is paid back). What is not admitted is dropped
and counted as `rate`. The defaults (`Limits.peer_*`) are far above what honest traffic needs.
The same bucket rate-limits the log lines a peer's rejections produce.
"""

from __future__ import annotations

import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; a charge may overdraw it (a debt)."""

    level: float
    stamp: float = field(default_factory=time.monotonic)

    def refill(self, rate: float, burst: float, now: float) -> float:
        self.level = min(burst, self.level + max(now - self.stamp, 0.0) * rate)
        self.stamp = now
        return self.level

    def take(self, n: float, rate: float, burst: float, now: float) -> bool:
        """Take `n` tokens if there are that many; False (and nothing taken) if not."""
        if self.refill(rate, burst, now) < n:
            return False
        self.level -= n
        return True

    def charge(self, n: float, rate: float, burst: float, now: float) -> None:
        """Take `n` tokens whatever is left: the bucket may go into debt."""
        self.refill(rate, burst, now)
        self.level -= n


@dataclass(frozen=True)
class Rates:
    """Per second, per peer; each bucket holds `burst_s` seconds' worth."""

    messages: float
    nbytes: float
    cpu: float  # seconds of decoding per second
    burst_s: float


class PeerBudget:
    """One peer's three buckets."""

    def __init__(self, rates: Rates) -> None:
        self.messages = TokenBucket(rates.messages * rates.burst_s)
        self.nbytes = TokenBucket(rates.nbytes * rates.burst_s)
        self.cpu = TokenBucket(rates.cpu * rates.burst_s)

    def admit(self, nbytes: int, rates: Rates, now: float) -> bool:
        """Whether a frame of `nbytes` may be decoded now; takes its message and bytes if so."""
        b = rates.burst_s
        if self.cpu.refill(rates.cpu, rates.cpu * b, now) < 0:
            return False
        if not self.messages.take(1, rates.messages, rates.messages * b, now):
            return False
        burst = rates.nbytes * b  # a frame larger than the burst takes a full bucket
        return self.nbytes.take(min(nbytes, burst), rates.nbytes, burst, now)

    def charge_cpu(self, seconds: float, rates: Rates, now: float) -> None:
        self.cpu.charge(seconds, rates.cpu, rates.cpu * rates.burst_s, now)


class Budgets(Generic[K]):
    """The budgets of every peer seen, by key; `forget_outside` drops those of departed peers."""

    def __init__(self) -> None:
        self._of: dict[K, PeerBudget] = {}

    def of(self, key: K, rates: Rates) -> PeerBudget:
        budget = self._of.get(key)
        if budget is None:
            budget = self._of[key] = PeerBudget(rates)
        return budget

    def forget_outside(self, keep: Container[K]) -> None:
        for key in [k for k in self._of if k not in keep]:
            del self._of[key]
