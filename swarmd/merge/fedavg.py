"""FedAvg: the sample-weighted mean, in O(model) memory.

An update held in memory is folded at once: `n_i * x_i` goes into one float64 accumulator per tensor
and the update is dropped, so the merge holds one model in float64 (twice a float32 model) plus the
update being added, whatever N is. An update that reads its tensors on access (`read_on_access`: the
leader's, each stored on disk or held by its store) is kept by reference instead and folded at the
merge one tensor at a time, across all updates: the merge then holds the float32 result plus one
tensor's float64 sum, about half as much, which keeps the leader's peak within its memory goal. A
stored update is read once more at the merge, after its hash was checked at open: a read that fails
there fails the merge (the round's next leader takes over), as it does for the robust rules.
Result: sum(n_i * x_i) / sum(n_i). Integer and bool tensors follow the same formula and are rounded
back (see `maths`).

Reproducible: a float32 value times a sample count below 2^29 is exact in float64, so each fold
rounds once (the add) whether or not the CPU fuses the multiply-add, and every coordinate is
independent of the others (no thread-dependent reduction). Floating-point addition is not
associative, so the result depends on the order of the adds: the caller adds in address order
(`Exchange.merge`, `swarmd.audit`), and both ways of folding add each coordinate's terms in the order
the updates were added, so the merge is the same bit for bit for any order of arrival and either way.
"""

from __future__ import annotations

import torch

from swarmd.merge.base import MergeRule, Update, read_on_access
from swarmd.merge.maths import cast_back
from swarmd.merge.validate import RejectReason, reject

# float32 has a 24-bit significand: times an integer below 2^29 the product fits float64's 53 bits.
MAX_EXACT_SAMPLES = (1 << 29) - 1


class FedAvg(MergeRule):
    name = "fedavg"
    streaming = True

    def _reset(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self._deferred: list[Update] = []  # read on access, folded at the merge in the order added

    def _fold(self, update: Update) -> None:
        if update.n_samples > MAX_EXACT_SAMPLES:
            raise reject(
                RejectReason.SAMPLES,
                f"sample count {update.n_samples} is above {MAX_EXACT_SAMPLES}, "
                "where n * x stops being exact in float64",
                sender=update.sender,
            )
        if read_on_access(update.state) and not self._acc:
            self._deferred.append(update)
            return
        # An update in memory after kept ones: fold those first, so every coordinate's adds keep the order.
        for kept in self._deferred:
            self._accumulate(kept)
        self._deferred = []
        self._accumulate(update)

    def _accumulate(self, update: Update) -> None:
        if not self._acc:
            self._acc = {k: torch.zeros(t.shape, dtype=torch.float64) for k, t in self.template.items()}
        for name, acc in self._acc.items():
            self._add(acc, name, update)

    def _add(self, acc: torch.Tensor, name: str, update: Update) -> None:
        value = update.state[name]
        # add_ with alpha converts in place: no scaled temporary of the update is built.
        if value.dtype == torch.bool:
            value = value.to(acc.dtype)
        acc.add_(value, alpha=self._weight(name, update))

    def _weight(self, name: str, update: Update) -> int:
        """The factor `name` of `update` is folded with; the mean divides by their sum (`_total`)."""
        return update.n_samples

    def _total(self, name: str) -> float:
        return float(self.total_samples)

    def _merge(self) -> dict[str, torch.Tensor]:
        merged = {}
        if self._deferred:  # one tensor at a time, across every kept update
            for name, t in self.template.items():
                acc = torch.zeros(t.shape, dtype=torch.float64)
                for update in self._deferred:
                    self._add(acc, name, update)
                merged[name] = cast_back(acc.div_(self._total(name)), t.dtype)
            self._deferred = []
            return merged
        # Divide in place and let each float64 tensor go once cast: no second model-sized buffer at the end.
        for name in list(self._acc):
            merged[name] = cast_back(self._acc.pop(name).div_(self._total(name)), self.template[name].dtype)
        return merged
