"""FedAvg: the sample-weighted mean, streamed.

`add()` folds `n_i * x_i` into one accumulator per tensor and drops the update, so the leader's
memory is one model (in the working dtype) plus the update being received, whatever N is.
Result: sum(n_i * x_i) / sum(n_i), divided in place, so the end of the merge allocates no second
model. Integer and bool tensors follow the same formula and are rounded back (see `maths`).
"""

from __future__ import annotations

import torch

from swarmd.merge.base import MergeRule, Update
from swarmd.merge.maths import cast_back, work_dtype


class FedAvg(MergeRule):
    name = "fedavg"
    streaming = True

    def _reset(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}

    def _fold(self, update: Update) -> None:
        if not self._acc:
            self._acc = {k: torch.zeros(t.shape, dtype=work_dtype(t.dtype)) for k, t in self.template.items()}
        for name, acc in self._acc.items():
            value = update.state[name]
            # add_ with alpha converts in place: no scaled temporary of the update is built.
            if value.dtype == torch.bool:
                value = value.to(acc.dtype)
            acc.add_(value, alpha=update.n_samples)

    def _merge(self) -> dict[str, torch.Tensor]:
        total = float(self.total_samples)
        # Divide in place and hand the accumulator over: no second model-sized buffer at the end.
        merged = {
            name: cast_back(acc.div_(total), self.template[name].dtype) for name, acc in self._acc.items()
        }
        self._acc = {}
        return merged
