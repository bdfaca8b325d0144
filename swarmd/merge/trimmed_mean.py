"""Coordinate-wise trimmed mean.

For each coordinate, the `floor(trim_ratio * N)` smallest and largest values are dropped and the
rest averaged, unweighted (sample counts are self-reported; see `median`). With trim_ratio in
[0, 0.5) at least one value always remains; trim_ratio 0 is the plain mean. Keeps all N updates.
The kept values are summed in float64 in sorted order, so the mean is the same on any thread count.
"""

from __future__ import annotations

import math

import torch

from swarmd.errors import MergeError
from swarmd.merge.base import BufferedRule
from swarmd.merge.maths import cast_back, columnwise, row_sum, sorted_rows


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
        k = self.trimmed(len(self.included))

        def trimmed_rows(block: torch.Tensor) -> torch.Tensor:
            ordered = sorted_rows(block)
            kept = ordered[k : ordered.shape[0] - k]
            # A float64 sum in row order, not torch's mean: its reduction order follows the threads.
            return row_sum(kept) / kept.shape[0]

        return {
            name: cast_back(columnwise(self.column(name), trimmed_rows), spec.dtype)
            for name, spec in self.template.items()
        }
