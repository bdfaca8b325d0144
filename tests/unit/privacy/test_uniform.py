"""What the leader sees: each masked payload it receives is indistinguishable from uniform uint32 noise.

The updates are as structured as updates get (every coordinate the same value, so their fixed point is
one repeated word). Two tests per payload, each at alpha = 1e-4: a chi-square on the 256 byte values
(255 degrees of freedom, 1024 expected per value) and a Kolmogorov-Smirnov test of the words / 2^32
against U(0, 1). With 8 payloads, the chance that uniform payloads fail any of the 16 tests is at most
16 * 1e-4 = 0.16 % (Bonferroni); the keys are seeded, so this run is the same on every machine. The
same tests reject the unmasked fixed point at once, so they have the power to see structure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats
from secagg_sim import make_swarm, masked_updates

from swarmd.privacy.masks import quantise

ALPHA = 1e-4
WORDS = 1 << 16


def _p_values(payload: dict[str, np.ndarray]) -> tuple[float, float]:
    words = np.concatenate([t.reshape(-1) for _, t in sorted(payload.items())])
    counts = np.bincount(words.view(np.uint8), minlength=256)
    chi = stats.chisquare(counts).pvalue
    ks = stats.kstest(words.astype(np.float64) / 2.0**32, "uniform").pvalue
    return float(chi), float(ks)


def _updates(sites: list[str]) -> dict[str, tuple[dict[str, np.ndarray], int]]:
    return {
        s: ({"w": np.full(WORDS - 100, 0.25 * i, np.float32), "b": np.zeros(100, np.float32)}, 10 + i)
        for i, s in enumerate(sites)
    }


def test_masked_payloads_look_uniform(tmp_path: Path) -> None:
    swarm = make_swarm(tmp_path, 8, k=4, key_seed=2024)
    for site, payload in masked_updates(swarm, _updates(swarm.sites)).items():
        chi, ks = _p_values(payload)
        assert chi > ALPHA and ks > ALPHA, f"{site}: chi-square p={chi:.2e}, KS p={ks:.2e}"


def test_the_tests_see_the_unmasked_fixed_point(tmp_path: Path) -> None:
    swarm = make_swarm(tmp_path, 3)
    for x, n in _updates(swarm.sites).values():
        chi, ks = _p_values(quantise(x, n, swarm.params))
        assert chi < ALPHA and ks < ALPHA
