"""Krum and multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017).

Of n updates, at most f may be arbitrary (Byzantine). Each update i is scored by the sum of its
squared distances to its n - f - 2 nearest other updates; Krum merges the update with the lowest
score, multi-Krum (m > 1) the unweighted mean of the m lowest (sample counts are self-reported, see
`median`). The guarantee needs n >= 2f + 3, and m <= n - f keeps every honest-majority choice
possible: a round with fewer updates raises `TooFewUpdates` (a MergeError), and a task whose
`min_peers` allows such a round is refused at task validation (`swarmd.task.krum_min_updates`).

Distances are taken over the floating tensors (the model as one vector; integer counters such as
BatchNorm's are averaged over the selected updates like everything else). Reproducible: the updates
are in address order, each pair's squared distance is built from `maths.square_rows` (fixed-order
row sums, fsum'd per tensor, then fsum'd over tensors), ties in score go to the lower address, and
the mean of the selected updates is a float64 sum in address order. The updates are read a slice of
one tensor at a time, so the leader holds O(N x CHUNK) of inputs (`BufferedRule`).

Verdicts: the selected updates share the merge equally; the others are rejected ("not selected"),
which the leader finalizes as REJECTED_BY_RULE.
"""

from __future__ import annotations

import math

import torch

from swarmd.errors import MergeError
from swarmd.merge.base import BufferedRule, RuleVerdict
from swarmd.merge.maths import cast_back, columnwise, row_sum, square_rows
from swarmd.task import krum_min_updates


class TooFewUpdates(MergeError):
    """A Krum round has fewer updates than its guarantee needs (n >= 2f + 3, m <= n - f)."""


class Krum(BufferedRule):
    name = "krum"

    def __init__(self, f: int = 1, m: int = 1) -> None:
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise MergeError(f"krum: f must be an integer >= 0, got {f!r}")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise MergeError(f"krum: m must be an integer >= 1, got {m!r}")
        super().__init__()
        self.f, self.m = f, m
        self.scores: list[float] = []  # the last result()'s scores, in address order

    def pairwise(self) -> list[list[float]]:
        """Squared L2 distances between every two updates (an n x n symmetric matrix, address order)."""
        names = [n for n, t in self.template.items() if t.dtype.is_floating_point] or list(self.template)
        n = len(self._updates)
        parts: list[list[list[float]]] = [[[] for _ in range(n)] for _ in range(n)]
        for name in names:
            rows: list[list[list[float]]] = [[[] for _ in range(n)] for _ in range(n)]  # per pair
            for _, values in self.chunks(name):
                wide = [v.to(torch.float64) for v in values]
                for i in range(n):
                    for j in range(i + 1, n):
                        rows[i][j].extend(square_rows(wide[i] - wide[j]))
            for i in range(n):
                for j in range(i + 1, n):
                    parts[i][j].append(math.fsum(rows[i][j]))
        out = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                out[i][j] = out[j][i] = math.fsum(parts[i][j])
        return out

    def select(self) -> list[int]:
        """The indices (address order) of the m updates with the lowest scores; sets `scores`."""
        n = len(self._updates)
        need = krum_min_updates(self.f, self.m)
        if n < need:
            raise TooFewUpdates(
                f"krum: {n} update(s) this round, but f = {self.f} and m = {self.m} need {need} "
                "(n >= 2f + 3 and m <= n - f)",
                hint="the task's min_peers should guarantee it; updates were excluded before the merge",
            )
        d = self.pairwise()
        nearest = n - self.f - 2
        self.scores = [math.fsum(sorted(d[i][j] for j in range(n) if j != i)[:nearest]) for i in range(n)]
        ranked = sorted(range(n), key=lambda i: (self.scores[i], i))  # a tie goes to the lower address
        return sorted(ranked[: self.m])

    def _merge(self) -> dict[str, torch.Tensor]:
        chosen = self.select()
        m = len(chosen)

        def mean(block: torch.Tensor) -> torch.Tensor:
            return row_sum(block) / m

        out = {
            name: cast_back(columnwise(self.chunks(name, chosen), spec, mean), spec.dtype)
            for name, spec in self.template.items()
        }
        rank = {
            i: r + 1 for r, i in enumerate(sorted(range(len(self.scores)), key=lambda i: (self.scores[i], i)))
        }
        n = len(self._updates)
        self._verdicts = {
            s: RuleVerdict(
                weight=1 / m if i in chosen else 0.0,
                rejected=i not in chosen,
                note=f"{'selected' if i in chosen else 'not selected'}: "
                f"score {self.scores[i]:.6g}, rank {rank[i]} of {n}",
            )
            for i, s in enumerate(self.senders)
        }
        return out
