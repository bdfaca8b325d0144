"""Coordinate-wise median.

Unweighted on purpose: sample counts are self-reported, and weighting by them would let one site
claim a huge count and move every coordinate. An even count of updates takes the mean of the two
middle values (numpy's convention). Keeps all N updates until `result()`.
"""

from __future__ import annotations

import torch

from swarmd.merge.base import BufferedRule
from swarmd.merge.maths import cast_back, columnwise, sorted_rows


def _median_rows(block: torch.Tensor) -> torch.Tensor:
    ordered = sorted_rows(block)
    n = ordered.shape[0]
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def coordinate_median(values: list[torch.Tensor]) -> torch.Tensor:
    """Median over the update axis, in the working dtype; the mean of the middle two for even N."""
    return columnwise(values, _median_rows)


class Median(BufferedRule):
    name = "median"

    def _merge(self) -> dict[str, torch.Tensor]:
        return {
            name: cast_back(coordinate_median(self.column(name)), spec.dtype)
            for name, spec in self.template.items()
        }
