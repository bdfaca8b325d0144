"""FedAvg: the sample-weighted mean, streamed.

`add()` folds `n_i * x_i` into one float64 accumulator per tensor and drops the update, so the
leader's memory is one model in float64 (twice a float32 model) plus the update being added,
whatever N is. Result: sum(n_i * x_i) / sum(n_i), divided in place, so the end of the merge
allocates no second model. Integer and bool tensors follow the same formula and are rounded back
(see `maths`).

Reproducible: a float32 value times a sample count below 2^29 is exact in float64, so each fold
rounds once (the add) whether or not the CPU fuses the multiply-add, and every coordinate is
independent of the others (no thread-dependent reduction). Floating-point addition is not
associative, so the result depends on the order of the adds: the caller adds in address order
(`Exchange.merge`, `swarmd.audit`), which makes the merge the same for any order of arrival.
"""

from __future__ import annotations

import torch

from swarmd.merge.base import MergeRule, Update
from swarmd.merge.maths import cast_back
from swarmd.merge.validate import RejectReason, reject

# float32 has a 24-bit significand: times an integer below 2^29 the product fits float64's 53 bits.
MAX_EXACT_SAMPLES = (1 << 29) - 1


class FedAvg(MergeRule):
    name = "fedavg"
    streaming = True

    def _reset(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}

    def _fold(self, update: Update) -> None:
        if update.n_samples > MAX_EXACT_SAMPLES:
            raise reject(
                RejectReason.SAMPLES,
                f"sample count {update.n_samples} is above {MAX_EXACT_SAMPLES}, "
                "where n * x stops being exact in float64",
                sender=update.sender,
            )
        if not self._acc:
            self._acc = {k: torch.zeros(t.shape, dtype=torch.float64) for k, t in self.template.items()}
        for name, acc in self._acc.items():
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
        # Divide in place and let each float64 tensor go once cast: no second model-sized buffer at the end.
        merged = {}
        for name in list(self._acc):
            merged[name] = cast_back(self._acc.pop(name).div_(self._total(name)), self.template[name].dtype)
        return merged
