"""The leader's side of one (round, term): which updates are expected, which arrived, the merge.

Updates are checked against the chain (sender committed, content hash equals its commitment) and
validated against the round's base model as they arrive; the leader stores each accepted update
before acknowledging it. The merge happens once, at the end: `fold(load)` opens the accepted
updates, in address order, and adds them to the task's merge rule. A fixed order makes the merge
reproducible (the same bits on any order of arrival, see `swarmd.merge`), which is what lets any
member recompute it (`swarmd.audit`). What `load` opens reads its tensors on access (a stored file,
or the model the store holds): fedavg keeps them by reference and reads one tensor of each at a time
at the merge, a robust rule a slice at a time (`merge.base.BufferedRule`); neither holds N models.
After the merge, `verdicts` holds what the rule did to each update; the ones it left out (Krum's
unselected) are excluded as REJECTED_BY_RULE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

from swarmd.compress import NONE, Encoding, decompressed
from swarmd.daemon.accounting import REJECTED_BY_RULE
from swarmd.errors import InvalidUpdate, StoreError
from swarmd.merge import RuleVerdict, Update, validate
from swarmd.merge.base import address_order


class Merger(Protocol):
    """What the exchange folds updates into: a merge rule, or secure aggregation's masked sum."""

    def begin(self, template: Mapping[str, torch.Tensor]) -> None: ...

    def add(self, update: Update) -> None: ...

    def result(self) -> dict[str, torch.Tensor]: ...


log = logging.getLogger("swarmd.exchange")


def check_masked(state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> None:
    """A masked update carries every float tensor of the base, same shape, as int32 ring elements;
    nothing else can be checked (its values are uniform by design)."""
    floats = {k: v for k, v in base.items() if v.dtype.is_floating_point}
    if set(state) != set(floats):
        raise InvalidUpdate("structure", "masked update's tensors are not the model's float tensors")
    for name, b in floats.items():
        t = state[name]
        if t.dtype != torch.int32 or t.shape != b.shape:
            raise InvalidUpdate(
                "structure", f"masked {name}: {t.dtype} {tuple(t.shape)}, want int32 {tuple(b.shape)}"
            )


@dataclass
class Exchange:
    round: int
    term: int
    expected: dict[str, tuple[bytes, int]]  # committer address -> (committed hash, sample count)
    base: Mapping[str, torch.Tensor]
    rule: Merger
    is_diff: bool
    norm_bound: float = 0.0
    masked: bool = False  # secure aggregation: updates are ring elements (int32), checked for shape only
    received: dict[str, bytes] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # address -> reason
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    label: Callable[[str], str] = str  # an account as log lines name it (its site name)
    closed: bool = False  # the merge began: nothing more is accepted
    verdicts: dict[str, RuleVerdict] = field(default_factory=dict)  # the rule's, once result() ran
    encoding: Encoding = NONE  # `[exchange] compression`: updates are checked and folded decompressed

    def __post_init__(self) -> None:
        self.rule.begin(self.base)

    @property
    def pending(self) -> set[str]:
        return set(self.expected) - set(self.received) - set(self.excluded)

    def offer(self, sender: str, state: Mapping[str, torch.Tensor], digest: bytes) -> None:
        """`check` then `accept`: for an update already in the leader's store."""
        self.check(sender, state, digest)
        self.accept(sender, digest)

    def check(self, sender: str, state: Mapping[str, torch.Tensor], digest: bytes) -> None:
        """Raise UpdateRejected with a reason (and exclude the sender) unless the update may be accepted:
        `admit`, then `inspect` on this thread. Called on the event loop."""
        self.admit(sender, digest)
        try:
            self.inspect(sender, state)
        except InvalidUpdate as exc:
            self.exclude_invalid(sender, exc)
            raise

    def admit(self, sender: str, digest: bytes) -> None:
        """The cheap half of `check`, on the event loop: a committer not yet received, whose update hashes
        to its commitment (a mismatch excludes it). Raises InvalidUpdate."""
        self._not_yet(sender)
        committed = self.expected[sender][0]
        if digest != committed:
            self._exclude(sender, "hash_mismatch")
            raise InvalidUpdate(
                "hash_mismatch",
                f"update from {sender} hashes to 0x{digest.hex()[:16]}.., "
                f"but 0x{committed.hex()[:16]}.. is on chain",
            )

    def inspect(self, sender: str, state: Mapping[str, torch.Tensor]) -> None:
        """The update's contents against the model (structure, finite values, the norm bound; a compressed
        update decoded): raises InvalidUpdate. Changes nothing here, so it may run in a worker thread
        (a pass over every value: it kept the event loop from every other stream for tens of ms, and for
        hundreds decoding a compressed update); the caller then calls `exclude_invalid`."""
        if self.masked:
            check_masked(state, self.base)
            return
        validate(
            decompressed(state, self.base, self.encoding, sender),
            self.base,
            norm_bound=self.norm_bound,
            reference=None if self.is_diff else self.base,
            is_diff=self.is_diff,
        )

    def exclude_invalid(self, sender: str, exc: InvalidUpdate) -> None:
        """`inspect` found the update of `sender` invalid: it is excluded from the round."""
        self._exclude(sender, exc.reason)

    def accept(self, sender: str, digest: bytes) -> None:
        """Count a checked update as received, once it is in the leader's store (the merge reads it
        from there, as soon as every committer is received or excluded)."""
        self._not_yet(sender)
        self.received[sender] = digest
        log.info(
            "round %d: accepted update from %s (%d/%d)",
            self.round,
            self.label(sender),
            len(self.received),
            len(self.expected),
        )
        self._check_complete()

    def close(self) -> None:
        """No update is checked or accepted from here on: the merge is about to read them. Called on
        the event loop, before `fold` starts in a worker thread."""
        self.closed = True

    def _not_yet(self, sender: str) -> None:
        if self.closed:
            raise InvalidUpdate("late", f"{sender}'s update came after round {self.round}'s merge began")
        if sender not in self.expected:
            raise InvalidUpdate("not_committer", f"{sender} did not commit in round {self.round}")
        if sender in self.received:
            raise InvalidUpdate(
                "duplicate", f"{sender} already delivered in round {self.round} term {self.term}"
            )

    def _exclude(self, sender: str, reason: str) -> None:
        self.excluded[sender] = reason
        log.warning("round %d: excluded %s (%s)", self.round, self.label(sender), reason)
        self._check_complete()

    def _check_complete(self) -> None:
        if not self.pending:
            self.complete.set()

    def fold(self, load: Callable[[bytes], Mapping[str, torch.Tensor]]) -> None:
        """Add the accepted updates to the rule, in address order.

        `load(digest)` returns an accepted update (the leader's store). May run in a worker thread:
        an update that fails here is excluded without touching the event loop's `complete`."""
        self.close()
        for sender in sorted(self.received, key=address_order):
            try:
                state = decompressed(load(self.received[sender]), self.base, self.encoding, sender)
                self.rule.add(Update(sender=sender, state=state, n_samples=self.expected[sender][1]))
            except InvalidUpdate as exc:
                self.received.pop(sender)
                self.excluded[sender] = exc.reason
            except StoreError as exc:
                log.error(
                    "round %d: the stored update of %s is lost: %s", self.round, self.label(sender), exc
                )
                self.received.pop(sender)
                self.excluded[sender] = "lost"

    def result(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The merged model (weights, not a diff) and the included committers, in commit order.

        An update the rule left out of the merge (Krum's unselected) stays received (stored, servable
        to an auditor) but is excluded as REJECTED_BY_RULE, so finalize reports it so."""
        merged = self.rule.result()
        self.verdicts = verdicts_of(self.rule)
        for sender, verdict in self.verdicts.items():
            if verdict.rejected:
                self.excluded[sender] = REJECTED_BY_RULE
                log.info("round %d: the rule left out %s (%s)", self.round, self.label(sender), verdict.note)
        if self.is_diff:
            from swarmd.merge import apply_diff

            merged = apply_diff(self.base, merged)
        included = [a for a in self.expected if a in self.received and a not in self.excluded]
        return merged, included

    def verdicts_json(self) -> dict[str, dict[str, object]]:
        """The rule's verdicts for the round's summary (the journal): address -> RuleVerdict.to_json()."""
        return {
            sender: v.to_json()
            for sender, v in sorted(self.verdicts.items(), key=lambda x: address_order(x[0]))
        }


def verdicts_of(rule: Merger) -> dict[str, RuleVerdict]:
    """What a merge rule did to each update; nothing for secure aggregation's masked sum (one sum, no
    per-update view)."""
    verdicts = getattr(rule, "verdicts", None)
    return verdicts() if callable(verdicts) else {}
