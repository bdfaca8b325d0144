"""Parameters, thresholds and the SecAgg+ graph every site derives alike from the chain's facts."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_sim import address

from swarmd.privacy import Advertised, SecAggError, SecAggParams, graph_seed, neighbourhood, threshold_for
from swarmd.privacy.params import connected
from swarmd.task import PrivacySettings


def _advertised(n: int) -> list[Advertised]:
    return [Advertised(address(i), bytes([i]) * 32, bytes([i + 1]) * 32) for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(0, 45), seed=st.binary(min_size=32, max_size=32))
def test_graph_is_symmetric_connected_and_at_least_k_regular(n: int, k: int, seed: bytes) -> None:
    adv = _advertised(n)
    graph = neighbourhood(adv, seed, k)
    assert sorted(graph) == sorted(a.site for a in adv)
    for s, ns in graph.items():
        assert ns == sorted(set(ns)) and s not in ns
        assert all(s in graph[o] for o in ns)
        want = n - 1 if k == 0 or k >= n - 1 else max(k, 2)
        assert want <= len(ns) <= want + 1
    assert connected(graph, set(graph))
    assert neighbourhood(list(reversed(adv)), seed, k) == graph  # order of events does not matter


def test_graph_depends_on_the_seed() -> None:
    adv = _advertised(30)
    graphs = {str(neighbourhood(adv, graph_seed(r, b"\x01" * 32), 4)) for r in range(5)}
    assert len(graphs) == 5
    assert (
        graph_seed(3, b"a") == hashlib.sha256(b"swarmd-secagg-graph" + (3).to_bytes(8, "big") + b"a").digest()
    )


def test_threshold() -> None:
    p = SecAggParams()
    assert [threshold_for(p, d) for d in (0, 1, 2, 3, 4, 5, 6, 7, 12, 30)] == [1, 1, 2, 3, 4, 4, 5, 5, 8, 20]
    assert threshold_for(SecAggParams(threshold=4), 7) == 4
    assert threshold_for(SecAggParams(threshold=9), 7) == 7


def test_params_from_settings_and_scale() -> None:
    p = SecAggParams.from_settings(
        PrivacySettings(threshold=3, neighbours=4, clip_range=2.0, sample_bound=1000)
    )
    assert (p.threshold, p.neighbours, p.clip_range, p.sample_bound) == (3, 4, 2.0, 1000)
    assert p.scale * p.clip_range * p.sample_bound == pytest.approx(2**31 - 1)
    with pytest.raises(SecAggError):
        SecAggParams(clip_range=float("nan"))


def test_advertised_checks_and_normalises() -> None:
    a = Advertised("0x" + "AB" * 20, bytes(32), bytes(32))
    assert a.site == "0x" + "ab" * 20
    with pytest.raises(SecAggError):
        Advertised("0x1234", bytes(32), bytes(32))
    with pytest.raises(SecAggError):
        Advertised(a.site, bytes(31), bytes(32))
    with pytest.raises(SecAggError) as err:
        neighbourhood([a, a], b"s", 0)
    assert err.value.reason == "duplicate_site"
