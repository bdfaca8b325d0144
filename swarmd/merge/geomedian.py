"""Geometric median by Weiszfeld's algorithm (robust to a minority of arbitrary updates).

The geometric median z minimises sum_i w_i * ||x_i - z|| over the whole floating-point model,
treated as one vector. Weiszfeld iterates z <- sum(b_i x_i) / sum(b_i) with b_i = w_i / ||x_i - z||,
starting from the weighted mean. Distances are floored at `eps` so that z landing on an update does
not divide by zero (the smoothing of Pillutla et al., "Robust Aggregation for Federated Learning").
It stops when z moves less than `tol` relative to its own norm, or after `max_iter` iterations.

Weights are equal by default (`weighted=False`): sample counts are self-reported, and a robust rule
should not let one site buy influence by claiming a large count. Integer and bool tensors are not
part of the vector; they take the coordinate median (see `maths`). Keeps all N updates, and one
working copy of z (in float64).

Reproducible: updates are visited in address order, z is kept in float64, every weighted sum is a
multiply then an add (two roundings, never a fused multiply-add) and every norm is `sum_squares`,
so the iterates, the stopping step and the snap are the same on any thread count and any CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from swarmd.errors import MergeError
from swarmd.merge.base import BufferedRule
from swarmd.merge.maths import cast_back, sum_squares
from swarmd.merge.median import coordinate_median

# Relative margin for the snap tests, above the float32 rounding in the distances.
_MARGIN = 1e-6


class GeoMedian(BufferedRule):
    name = "geomedian"

    def __init__(
        self, tol: float = 1e-6, max_iter: int = 100, eps: float = 1e-8, weighted: bool = False
    ) -> None:
        if not (tol > 0 and math.isfinite(tol)):
            raise MergeError(f"geomedian: tol must be a positive number, got {tol}")
        if max_iter < 1:
            raise MergeError(f"geomedian: max_iter must be >= 1, got {max_iter}")
        if not (eps > 0 and math.isfinite(eps)):
            raise MergeError(f"geomedian: eps must be a positive number, got {eps}")
        super().__init__()
        self.tol, self.max_iter, self.eps, self.weighted = tol, max_iter, eps, weighted
        self.iterations = 0  # iterations the last result() took, for logs and tests

    def _float_names(self) -> list[str]:
        return [n for n, t in self.template.items() if t.dtype.is_floating_point]

    def _weighted_sum(self, names: list[str], coeffs: list[float]) -> dict[str, torch.Tensor]:
        """sum_i coeffs_i * x_i / sum(coeffs), tensor by tensor, in float64."""
        total = math.fsum(coeffs)
        out = {}
        for name in names:
            acc = torch.zeros(self.template[name].shape, dtype=torch.float64)
            for c, value in zip(coeffs, self.column(name), strict=True):
                acc.add_(value.to(torch.float64) * (c / total))
            out[name] = acc
        return out

    def _distances(self, names: list[str], z: dict[str, torch.Tensor]) -> list[float]:
        """||x_i - z|| over the floating tensors, for every update (float64, one tensor at a time)."""
        return [_distance(names, u.state, z) for u in self._updates]

    def weiszfeld(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The geometric median of the named (floating) tensors across the buffered updates."""
        base = [float(w) for w in self.weights] if self.weighted else [1.0] * len(self._updates)
        z = self._weighted_sum(names, base)
        self.iterations = 0
        for _ in range(self.max_iter):
            self.iterations += 1
            dists = self._distances(names, z)
            new = self._weighted_sum(names, [w / max(d, self.eps) for w, d in zip(base, dists, strict=True)])
            moved = _distance(names, new, z)
            z = new
            if moved <= self.tol * max(_distance(names, z, None), 1.0):
                break
        return self._snap_to_update(names, base, z)

    def _snap_to_update(
        self, names: list[str], base: list[float], z: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Return the update nearest to z instead of z when that update is the better median.

        Weiszfeld converges only sublinearly when the median sits on an update (common with few
        sites: two identical updates, or one site between the others), so z stops short of it.
        x_k is the unique median when the pull of the others, the norm of
        sum_{i: x_i != x_k} w_i (x_i - x_k) / ||x_i - x_k||, is below the weight sitting on x_k.
        At equality x_k is still a median but maybe not the only one (two sites: the whole segment),
        so it is taken only when its sum of distances is really lower than z's.
        Updates within `eps` of x_k count as sitting on it, as in the iteration: a subnormal gap
        would make w / gap overflow the working dtype.
        """
        dists = self._distances(names, z)
        k = min(range(len(dists)), key=dists.__getitem__)
        anchor = self._updates[k].state
        gaps = [_distance(names, u.state, anchor) for u in self._updates]
        on_anchor = math.fsum(w for w, g in zip(base, gaps, strict=True) if g <= self.eps)
        pull_sq = 0.0
        for name in names:
            pull = torch.zeros(self.template[name].shape, dtype=torch.float64)
            for w, g, u in zip(base, gaps, self._updates, strict=True):
                if g > self.eps:
                    pull.add_((u.state[name].to(torch.float64) - anchor[name]) * (w / g))
            pull_sq += sum_squares(pull)
        unique_median = math.sqrt(pull_sq) < on_anchor * (1 - _MARGIN)
        cost_z = math.fsum(w * d for w, d in zip(base, dists, strict=True))
        cost_anchor = math.fsum(w * g for w, g in zip(base, gaps, strict=True))
        if unique_median or cost_anchor < cost_z * (1 - _MARGIN):
            return {name: anchor[name].to(torch.float64) for name in names}
        return z

    def _merge(self) -> dict[str, torch.Tensor]:
        names = self._float_names()
        z = self.weiszfeld(names) if names else {}
        out: dict[str, torch.Tensor] = {}
        for name, spec in self.template.items():
            value = z[name] if name in z else coordinate_median(self.column(name))
            out[name] = cast_back(value, spec.dtype)
        return out


def _distance(names: list[str], a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor] | None) -> float:
    """L2 distance between two states over `names` (the norm of `a` when b is None).

    The difference is taken in float64 (exact for two float32 tensors) and the squares are summed
    by `sum_squares`, so the distance does not depend on the thread count.
    """
    sq = 0.0
    for name in names:
        d = a[name] if b is None else a[name].to(torch.float64) - b[name].to(torch.float64)
        sq += sum_squares(d)
    return math.sqrt(sq)
