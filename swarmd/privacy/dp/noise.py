"""Site-level DP (DP-FedAvg) on one update: clip its whole-model L2 norm to C, add Gaussian noise.

Without secure aggregation each site adds N(0, (sigma*C)^2) per coordinate, so every update that leaves the
site is (epsilon, delta)-DP on its own, against anyone (local DP of the update). With secure aggregation each
site adds sigma/sqrt(n) of it, so only the sum carries sigma*C: the guarantee holds against whoever sees the
sum (every other site and the leader), provided at least n sites' noise is in it; a site's masked update is
protected by the masking, not by its own noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from swarmd.privacy.dp.errors import DPError
from swarmd.privacy.dp.plan import DPPlan

# Float32 rounding may lengthen a clipped vector by a few ulps; scaling to just under C keeps it <= C.
_SHRINK = 1.0 - 1e-6


def _floats(tensors: Mapping[str, np.ndarray]) -> list[str]:
    return [k for k, v in tensors.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]


def _diffs(
    tensors: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray] | None, names: list[str]
) -> dict[str, np.ndarray]:
    if base is None:
        return {k: np.asarray(tensors[k], dtype=np.float64) for k in names}
    missing = [k for k in names if k not in base]
    if missing:
        raise DPError(f"the base model lacks {len(missing)} tensor(s) of the update, e.g. {missing[:3]}")
    out = {}
    for k in names:
        t, b = np.asarray(tensors[k]), np.asarray(base[k])
        if t.shape != b.shape:
            raise DPError(f"{k!r} has shape {t.shape}, the base model has {b.shape}")
        out[k] = t.astype(np.float64) - b.astype(np.float64)
    return out


def clip_update(diffs: Mapping[str, np.ndarray], clip: float) -> tuple[dict[str, np.ndarray], float]:
    """`diffs` (float64) scaled to whole-model L2 norm <= clip, and their norm before clipping."""
    norm = math.sqrt(sum(float(np.dot(d.ravel(), d.ravel())) for d in diffs.values()))
    if not math.isfinite(norm):
        raise DPError("the update holds NaN or infinite values")
    scale = 1.0 if norm <= clip * _SHRINK else clip * _SHRINK / norm
    return {k: d * scale for k, d in diffs.items()}, norm


def privatize_update(
    tensors: Mapping[str, np.ndarray],
    base: Mapping[str, np.ndarray] | None,
    plan: DPPlan,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], float]:
    """Clip and noise an update; return it in the kind it came (weights or diff) and its pre-clip norm.

    `base` None: `tensors` is a difference to the round's base model. Otherwise `tensors` are weights
    and the result is base + clipped, noised difference. Integer tensors (counters) pass unchanged."""
    if plan.per_site_noise < 0.0 or not math.isfinite(plan.per_site_noise):
        raise DPError(f"per-site noise must be >= 0, got {plan.per_site_noise}")
    names = _floats(tensors)
    clipped, norm = clip_update(_diffs(tensors, base, names), plan.clip)
    std = plan.per_site_noise * plan.clip
    out: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in tensors.items()}
    for k in names:
        d = clipped[k]
        if std > 0.0:
            d = d + rng.normal(0.0, std, size=d.shape)
        if base is not None:
            d = d + np.asarray(base[k], dtype=np.float64)
        out[k] = d.astype(np.asarray(tensors[k]).dtype)
    return out, norm
