"""Exactness: the leader's unmasked result is the plain FedAvg of the survivors' (clipped) updates.

Bound: each site's fixed-point value q_i = clamp(rint(v_i)) differs from v_i = s * n_i * clip(x_i) by at
most 1 (1/2 from rounding, up to 1 where the cap floor(n_i (2^31 - 1) / bound) bites), so the decoded
mean sum(q_i) / (s N) is within |S| / (s N) of the exact mean, N = sum of survivors' samples; the cast
to float32 adds at most half an ulp of |mean| <= clip, i.e. clip * 2^-24.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_sim import answer_all, make_swarm, masked_updates, plain_mean, random_update, unmasker

from swarmd.privacy import BelowThreshold, SecAggParams
from swarmd.privacy.params import connected


def _bound(params: SecAggParams, survivors: int, n_total: int) -> float:
    return survivors / (params.scale * n_total) + params.clip_range * 2.0**-24


def run_round(tmp: Path, n: int, k: int, fails: list[int], seed: int, params: SecAggParams) -> None:
    """fails[i] for the i-th failing site: 0 never committed (X), 1 committed but its update never came
    (D), 2 its update came but it never answers (killed after sending)."""
    swarm = make_swarm(tmp, n, k, params=params, key_seed=seed)
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(swarm.sites))
    kind = {s: f for s, f in zip(order, fails, strict=False)}
    updates = {
        s: (random_update(rng, params.clip_range), int(rng.integers(1, 1000)))
        for s in swarm.sites
        if kind.get(s) != 0
    }
    committed = {s: n_i for s, (_, n_i) in updates.items()}
    masked = masked_updates(swarm, updates)
    survivors = [s for s in committed if kind.get(s) != 1]
    um = unmasker(swarm, committed)
    for s in survivors:
        um.add(s, masked[s])
    responders = [s for s in survivors if kind.get(s) != 2]
    refused = answer_all(swarm, um, um.requests(1, order[-1]), committed, responders)
    assert um.survivors == sorted(survivors) and um.absent == sorted(s for s in kind if kind[s] == 0)
    if k == 0:  # complete graph, at most a third failing: always enough shares
        assert not refused and um.ready
    if not connected(swarm.graph, set(survivors)):
        assert {e.reason for e in refused} == {"disconnected"}
    if not um.ready:
        with pytest.raises(BelowThreshold):
            um.result()
        return
    result = um.result()
    expected = plain_mean({s: updates[s] for s in survivors}, params.clip_range)
    tol = _bound(params, len(survivors), sum(committed[s] for s in survivors))
    for name, value in expected.items():
        assert result[name].dtype == np.float32 and result[name].shape == value.shape
        assert np.abs(result[name].astype(np.float64) - value).max() <= tol


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([3, 5, 8]), data=st.data())
def test_result_is_the_weighted_mean_within_the_quantisation_step(
    tmp_path_factory: pytest.TempPathFactory, n: int, data: st.DataObject
) -> None:
    k = data.draw(st.sampled_from([0, 2, 3, 4]), label="neighbours")
    fails = data.draw(st.lists(st.integers(0, 2), max_size=n // 3), label="failures")
    params = SecAggParams(clip_range=data.draw(st.sampled_from([0.5, 4.0])), sample_bound=1 << 14)
    run_round(tmp_path_factory.mktemp("round"), n, k, fails, data.draw(st.integers(0, 2**16)), params)


@pytest.mark.parametrize(("n", "fails"), [(3, [2]), (3, [1]), (3, [0]), (5, [1]), (8, [2, 2]), (8, [1, 0])])
def test_dropouts_of_up_to_a_third_on_complete_graphs(tmp_path: Path, n: int, fails: list[int]) -> None:
    run_round(tmp_path, n, 0, fails, 11, SecAggParams())


def test_extreme_values_at_the_sample_bound_do_not_wrap(tmp_path: Path) -> None:
    params = SecAggParams(clip_range=1.0, sample_bound=100)
    swarm = make_swarm(tmp_path, 3, params=params)
    ones = {"w": np.full(64, 5.0, dtype=np.float32)}  # clipped to 1.0: every coordinate at the cap
    updates = dict(zip(swarm.sites, [(ones, 50), ({"w": -ones["w"]}, 25), (ones, 25)], strict=True))
    um = unmasker(swarm, {s: n for s, (_, n) in updates.items()})
    for s, m in masked_updates(swarm, updates).items():
        um.add(s, m)
    answer_all(swarm, um, um.requests(1, swarm.sites[0]), list(updates), swarm.sites)
    assert np.abs(um.result()["w"] - 0.5).max() <= _bound(params, 3, 100)
