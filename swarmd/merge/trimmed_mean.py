"""Coordinate-wise trimmed mean.

For each coordinate, the `floor(trim_ratio * N)` smallest and largest values are dropped and the
rest averaged, unweighted (sample counts are self-reported; see `median`). With trim_ratio in
[0, 0.5) at least one value always remains; trim_ratio 0 is the plain mean. Reads the N updates a
slice at a time. The kept values are summed in float64 in sorted order, so the mean is the same on
any thread count.

Verdicts: `trimmed` is the fraction of a site's coordinates that were cut, `weight` its average
share of the kept mean (1/(N - 2k) on every coordinate it was kept). No site is rejected outright.
"""

from __future__ import annotations

import math

import torch

from swarmd.errors import MergeError
from swarmd.merge.base import BufferedRule, RuleVerdict
from swarmd.merge.maths import cast_back, columnwise, row_sum, sorted_rows
from swarmd.merge.median import Shares


class TrimmedMean(BufferedRule):
    name = "trimmed_mean"

    def __init__(self, trim_ratio: float = 0.1) -> None:
        if not (0.0 <= trim_ratio < 0.5):
            raise MergeError(f"trimmed_mean: trim_ratio must be in [0, 0.5), got {trim_ratio}")
        super().__init__()
        self.trim_ratio = trim_ratio

    def trimmed(self, n: int) -> int:
        """How many values are cut from each end when `n` updates were added."""
        return math.floor(self.trim_ratio * n)

    def _merge(self) -> dict[str, torch.Tensor]:
        n = len(self._updates)
        k = self.trimmed(n)
        cut = Shares(n)

        def trimmed_rows(block: torch.Tensor) -> torch.Tensor:
            ordered, index = sorted_rows(block)
            cut.coordinates += ordered.shape[1]
            if k:
                cut.add(index[:k], 1.0)
                cut.add(index[n - k :], 1.0)
            kept = ordered[k : n - k]
            # A float64 sum in row order, not torch's mean: its reduction order follows the threads.
            return row_sum(kept) / kept.shape[0]

        out = {
            name: cast_back(columnwise(self.chunks(name), spec, trimmed_rows), spec.dtype)
            for name, spec in self.template.items()
        }
        self._verdicts = {
            s: RuleVerdict(weight=(1 - c) / (n - 2 * k), trimmed=c, note="fraction of coordinates trimmed")
            for s, c in zip(self.senders, cut.fractions(), strict=True)
        }
        return out
