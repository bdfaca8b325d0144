"""The merge-rule contract: `Update`, and the `MergeRule` lifecycle begin -> add* -> result.

A rule instance is reusable: `begin(template)` starts a round and forgets the previous one.
`add()` checks an update's structure against the template (names, shapes, dtypes) and refuses a
second update from the same sender; the full checks (finite values, norm bound) are `validate()`'s,
which the leader runs first. `result()` raises MergeError when nothing was added.

Memory: fedavg folds an in-memory update into one accumulator and keeps no reference to it; updates
that read on access (`read_on_access`: the leader's, stored or held) it keeps by reference and folds
at the merge one tensor at a time, so the leader holds O(model) whatever the number of peers. The
robust rules (median, geometric median, trimmed mean, Krum) need all N updates at once: they keep them
by reference and, for the leader's stored updates, read them back a slice at a time (`BufferedRule`).

`verdicts()` says, after `result()`, what the rule did to each update (`RuleVerdict`): its share of
the merge, and whether it was left out entirely (Krum's unselected updates). Left-out updates are
not in `included`; the leader finalizes them as REJECTED_BY_RULE.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from swarmd.errors import MergeError
from swarmd.merge import maths
from swarmd.merge.validate import RejectReason, check_structure, reject


@dataclass(frozen=True)
class Update:
    """One site's contribution to a round: its state dict (weights or a diff) and its sample count."""

    sender: str
    state: Mapping[str, torch.Tensor]
    n_samples: int

    def __post_init__(self) -> None:
        n = self.n_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise reject(
                RejectReason.SAMPLES,
                f"sample count must be a positive integer, got {n!r}",
                sender=self.sender,
            )


@dataclass(frozen=True)
class RuleVerdict:
    """What a rule did to one update in the last result().

    `weight`: the update's share of the merged value (shares sum to 1 over the round's updates; for the
    coordinate-wise rules, the average over coordinates). `rejected`: left out of the merge entirely
    (finalize's REJECTED_BY_RULE). `trimmed`: for trimmed mean, the fraction of its coordinates cut.
    `note`: why, in words, for the round's summary."""

    weight: float
    rejected: bool = False
    trimmed: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"weight": round(self.weight, 6)}
        if self.rejected:
            doc["rejected"] = True
        if self.trimmed:
            doc["trimmed"] = round(self.trimmed, 6)
        if self.note:
            doc["note"] = self.note
        return doc


@dataclass(frozen=True)
class TensorSpec:
    shape: torch.Size
    dtype: torch.dtype


class MergeRule(ABC):
    """An aggregation rule. Subclasses implement `_reset`, `_fold` and `_merge`."""

    name: str = ""
    streaming: bool = False  # True when add() keeps no reference to an update held in memory

    def __init__(self) -> None:
        self._template: dict[str, torch.Tensor] | None = None
        self._senders: list[str] = []
        self._counts: dict[str, int] = {}
        self._total_samples = 0
        self._merged: dict[str, torch.Tensor] | None = None

    def begin(self, template: Mapping[str, torch.Tensor]) -> None:
        """Start a round for a model shaped like `template` (its values are not used)."""
        if not template:
            raise MergeError("the template model has no tensors")
        for name, t in template.items():
            if not isinstance(t, torch.Tensor):
                raise MergeError(f"template entry {name} is a {type(t).__name__}, not a tensor")
        # Meta tensors keep names, shapes and dtypes without holding the template's memory.
        self._template = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in template.items()}
        self._senders = []
        self._counts = {}
        self._total_samples = 0
        self._merged = None
        self._reset()

    def add(self, update: Update) -> None:
        """Take one update into the round. Raises InvalidUpdate on a structure mismatch or a repeat sender."""
        template = self._require_template()
        if self._merged is not None:
            raise reject(RejectReason.LATE, "arrived after the round was merged", sender=update.sender)
        if update.sender in self._senders:
            raise reject(RejectReason.DUPLICATE, "already added this round", sender=update.sender)
        check_structure(_structure(update.state), template, update.sender)
        self._fold(update)
        self._senders.append(update.sender)
        self._counts[update.sender] = update.n_samples
        self._total_samples += update.n_samples

    def result(self) -> dict[str, torch.Tensor]:
        """The merged state dict, in the template's names order and dtypes.

        It closes the round: later add() calls are rejected as "late", and calling result() again
        returns the same tensors (a streaming rule may have turned its accumulator into them).
        """
        template = self._require_template()
        if self._merged is None:
            if not self._senders:
                raise MergeError(f"{self.name}: no update was added this round, nothing to merge")
            merged = self._merge()
            self._merged = {name: merged[name] for name in template}
        return dict(self._merged)

    @property
    def included(self) -> tuple[str, ...]:
        """Senders merged this round, in the order they were added (finalize's `included`): after
        result(), without those the rule rejected."""
        rejected = self.rejected
        return tuple(s for s in self._senders if s not in rejected)

    @property
    def rejected(self) -> frozenset[str]:
        """Senders the last result() left out entirely (empty before result())."""
        if self._merged is None:
            return frozenset()
        return frozenset(s for s, v in self.verdicts().items() if v.rejected)

    def verdicts(self) -> dict[str, RuleVerdict]:
        """sender -> what the last result() did to its update. The default: shares by sample count
        (fedavg's weights); robust rules override it. Empty before result()."""
        if self._merged is None:
            return {}
        return {s: RuleVerdict(weight=n / self._total_samples) for s, n in self._counts.items()}

    @property
    def total_samples(self) -> int:
        return self._total_samples

    @property
    def template(self) -> Mapping[str, torch.Tensor]:
        return self._require_template()

    def _require_template(self) -> dict[str, torch.Tensor]:
        if self._template is None:
            raise MergeError(f"{self.name}: begin(template) was not called")
        return self._template

    @abstractmethod
    def _reset(self) -> None:
        """Drop whatever the previous round held."""

    @abstractmethod
    def _fold(self, update: Update) -> None:
        """Take a structurally valid update."""

    @abstractmethod
    def _merge(self) -> dict[str, torch.Tensor]:
        """Combine what was folded; at least one update is present."""


def _structure(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """What a structure check reads: shape-only tensors when the state reads its tensors on access
    (a stored update, `checkpoint_reader.StoredState`), so the check reads no data."""
    meta = getattr(state, "meta", None)
    return meta() if callable(meta) else state


def address_order(sender: str) -> str:
    """The key every merge folds updates in by: the committer's address, case-insensitively (an
    address may come checksummed or not). A fixed order makes the float sums the same on any
    order of arrival."""
    return sender.lower()


class BufferedRule(MergeRule):
    """Base of the robust rules: keeps every update until result(), in address order whatever order
    they were added in.

    A stored update (one that reads its tensors on access, `checkpoint_reader.StoredState`) is kept by
    reference, not read: the rule reads it back from the store a slice of one tensor at a time
    (`chunks`), every time it needs it, so the leader holds O(N x CHUNK) of inputs, not N models. An
    in-memory state is kept by reference too (its caller holds it anyway)."""

    def _reset(self) -> None:
        self._updates: list[Update] = []
        self._verdicts: dict[str, RuleVerdict] = {}

    def _fold(self, update: Update) -> None:
        state = update.state if read_on_access(update.state) else {n: update.state[n] for n in self.template}
        self._updates.append(Update(update.sender, state, update.n_samples))
        self._updates.sort(key=lambda u: address_order(u.sender))

    @property
    def senders(self) -> list[str]:
        """The buffered senders, in address order (the order of `chunks`' values)."""
        return [u.sender for u in self._updates]

    def chunks(self, name: str, updates: list[int] | None = None) -> Iterator[tuple[int, list[torch.Tensor]]]:
        """(start, values) for consecutive slices of tensor `name`, flattened: `values` holds each update's
        elements [start, start + maths.CHUNK) (in address order; only `updates`, by index, when given)."""
        total = self.template[name].numel()
        picked = [self._updates[i] for i in updates] if updates is not None else self._updates
        step = maths.CHUNK
        for start in range(0, max(total, 1), step):
            stop = min(total, start + step)
            yield start, [flat_slice(u.state, name, start, stop) for u in picked]

    @property
    def weights(self) -> list[int]:
        return [u.n_samples for u in self._updates]

    def verdicts(self) -> dict[str, RuleVerdict]:
        """What the last result() did to each update; equal shares until a rule says otherwise."""
        if self._verdicts:
            return dict(self._verdicts)
        return super().verdicts()


def read_on_access(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state a rule may keep by reference until its merge: one that reads each tensor when
    asked (a stored update, `checkpoint_reader.StoredState`) or one its owner holds anyway (`HeldState`)."""
    return callable(getattr(state, "read_flat", None))


def flat_slice(state: Mapping[str, torch.Tensor], name: str, start: int, stop: int) -> torch.Tensor:
    """Elements [start, stop) of `state[name]`, flattened; a stored state reads only those bytes."""
    read = getattr(state, "read_flat", None)
    if callable(read):
        out: torch.Tensor = read(name, start, stop)
        return out
    return state[name].reshape(-1)[start:stop]
