"""Site-level DP on an update: the clipped contribution has norm <= C; the noise has the configured scale."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from swarmd.privacy.dp import DPError, DPPlan, privatize_update
from swarmd.task import DPMechanism

PLAN = DPPlan(DPMechanism.SITE, 1.0, 1.0, 1e-5, 1.0, 1, 0.0, "rdp")

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def _norm(tensors: dict[str, np.ndarray], base: dict[str, np.ndarray] | None) -> float:
    total = 0.0
    for k, v in tensors.items():
        d = v.astype(np.float64) - (base[k].astype(np.float64) if base is not None else 0.0)
        total += float(np.sum(d * d))
    return math.sqrt(total)


@settings(max_examples=40, deadline=None)
@given(
    a=arrays(np.float32, st.integers(1, 50), elements=finite),
    b=arrays(np.float32, (3, 4), elements=finite),
    clip=st.floats(1e-3, 1e3),
)
def test_clipped_diff_norm_at_most_c(a: np.ndarray, b: np.ndarray, clip: float) -> None:
    plan = replace(PLAN, clip=clip)
    out, norm = privatize_update({"a": a, "b": b}, None, plan, np.random.default_rng(0))
    assert _norm(out, None) <= clip
    assert norm == pytest.approx(_norm({"a": a, "b": b}, None), rel=1e-9)
    assert out["a"].dtype == np.float32


@settings(max_examples=30, deadline=None)
@given(w=arrays(np.float32, 20, elements=finite), base=arrays(np.float32, 20, elements=finite))
def test_weights_in_weights_out_within_c(w: np.ndarray, base: np.ndarray) -> None:
    steps = np.array([7], dtype=np.int64)
    out, _ = privatize_update({"w": w, "n": steps}, {"w": base, "n": steps}, PLAN, np.random.default_rng(0))
    # base + diff is rounded to float32 once more: allow one float32 ulp of the base per coordinate
    slack = float(np.linalg.norm(np.spacing(np.abs(base).astype(np.float32)).astype(np.float64)))
    assert _norm({"w": out["w"]}, {"w": base}) <= PLAN.clip + slack
    assert out["n"] is not None and out["n"].tolist() == [7]


def test_small_updates_pass_unclipped() -> None:
    diff = {"w": np.full(4, 0.1, dtype=np.float64)}
    out, norm = privatize_update(diff, None, PLAN, np.random.default_rng(0))
    assert norm == pytest.approx(0.2)
    np.testing.assert_array_equal(out["w"], diff["w"])


def test_noise_has_the_configured_scale() -> None:
    """Sample std of n = 200_000 noise draws on a zero update, against sigma * C.

    The sample variance of n normals has relative standard error sqrt(2/n) = 0.32%; the test allows
    5 standard errors, a false-failure rate of 5.7e-7 for a random seed (the seed is fixed)."""
    plan = replace(PLAN, clip=0.5, per_site_noise=1.7)
    n = 200_000
    out, _ = privatize_update({"w": np.zeros(n, dtype=np.float32)}, None, plan, np.random.default_rng(1234))
    x = out["w"].astype(np.float64)
    var, want = float(np.var(x)), (1.7 * 0.5) ** 2
    assert abs(var / want - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(float(np.mean(x))) < 5 * math.sqrt(want / n)


def test_noise_split_under_secure_aggregation_sums_to_sigma() -> None:
    """Four sites each adding sigma/2 give a sum with std sigma (same 5-SE bound as above)."""
    plan = replace(PLAN, per_site_noise=0.5)
    rng = np.random.default_rng(99)
    n = 100_000
    total = sum(privatize_update({"w": np.zeros(n)}, None, plan, rng)[0]["w"] for _ in range(4))
    assert abs(float(np.var(total)) - 1.0) < 5 * math.sqrt(2 / n)


def test_malformed_updates() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DPError, match="NaN"):
        privatize_update({"w": np.array([np.nan])}, None, PLAN, rng)
    with pytest.raises(DPError, match="shape"):
        privatize_update({"w": np.zeros(3)}, {"w": np.zeros(4)}, PLAN, rng)
    with pytest.raises(DPError, match="lacks"):
        privatize_update({"w": np.zeros(3)}, {}, PLAN, rng)
    with pytest.raises(DPError, match="noise"):
        privatize_update({"w": np.zeros(3)}, None, replace(PLAN, per_site_noise=-1.0), rng)
