"""Coordinate-wise median.

Unweighted on purpose: sample counts are self-reported, and weighting by them would let one site
claim a huge count and move every coordinate. An even count of updates takes the mean of the two
middle values (numpy's convention). Reads the N updates a slice at a time (`BufferedRule.chunks`).

Verdicts: each site's weight is its share of the median over all coordinates (1 where its value is
the median, 1/2 where it is one of the two middle values), so a site whose values are never in the
middle ends with weight 0; no site is rejected outright.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from swarmd.merge.base import BufferedRule, RuleVerdict
from swarmd.merge.maths import cast_back, columnwise, sorted_rows


class Shares:
    """Per-update sums of its share of the merged value, over the coordinates seen (in float64)."""

    def __init__(self, n: int) -> None:
        self.sums = torch.zeros(n, dtype=torch.float64)
        self.coordinates = 0

    def add(self, indices: torch.Tensor, share: float) -> None:
        """Each entry of `indices` (update numbers) got `share` of one coordinate."""
        self.sums += (
            torch.bincount(indices.reshape(-1), minlength=self.sums.numel()).to(torch.float64) * share
        )

    def fractions(self) -> list[float]:
        return (self.sums / max(self.coordinates, 1)).tolist()


def coordinate_median(
    chunks: Iterable[tuple[int, list[torch.Tensor]]], like: torch.Tensor, shares: Shares | None = None
) -> torch.Tensor:
    """Median over the update axis, in the working dtype; the mean of the middle two for even N."""

    def median_rows(block: torch.Tensor) -> torch.Tensor:
        ordered, index = sorted_rows(block)
        n = ordered.shape[0]
        if shares is not None:
            shares.coordinates += ordered.shape[1]
            if n % 2:
                shares.add(index[n // 2], 1.0)
            else:
                shares.add(index[n // 2 - 1 : n // 2 + 1], 0.5)
        if n % 2:
            return ordered[n // 2]
        return (ordered[n // 2 - 1] + ordered[n // 2]) / 2

    return columnwise(chunks, like, median_rows)


class Median(BufferedRule):
    name = "median"

    def _merge(self) -> dict[str, torch.Tensor]:
        shares = Shares(len(self._updates))
        out = {
            name: cast_back(coordinate_median(self.chunks(name), spec, shares), spec.dtype)
            for name, spec in self.template.items()
        }
        self._verdicts = {
            s: RuleVerdict(weight=w, note="share of the coordinate-wise median")
            for s, w in zip(self.senders, shares.fractions(), strict=True)
        }
        return out
