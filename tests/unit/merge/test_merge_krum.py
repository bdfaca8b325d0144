"""Krum and multi-Krum against a small numpy reference (which update Krum selects, which multi-Krum
averages), its n >= 2f + 3 requirement (a named MergeError in a round, a TaskError at task
validation), ties, its verdicts, and the task settings' hash."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from merge_cases import merge, rounds, stacked

from swarmd.errors import InvalidUpdate, MergeError, TaskError
from swarmd.merge import Krum, TooFewUpdates, Update, get_rule, rule_for
from swarmd.task import SwarmSettings, _hashed_swarm, _validate_swarm


def ref_krum(x: np.ndarray, f: int, m: int) -> list[int]:
    """Blanchard et al.: score_i = sum of the n - f - 2 smallest ||x_i - x_j||^2 (j != i); the m lowest,
    a tie going to the lower index."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
    scores = [np.sort(np.delete(d[i], i))[: n - f - 2].sum() for i in range(n)]
    return sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])


def _toy(n: int, seed: int, outliers: int = 1) -> list[Update]:
    """n small vectors near 0, the last `outliers` of them far away."""
    rng = np.random.default_rng(seed)
    ups = []
    for i in range(n):
        v = rng.normal(0, 0.1, size=6) + (50.0 * (i + 1) if i >= n - outliers else 0.0)
        ups.append(Update(f"0x{i:02x}", {"w": torch.tensor(v, dtype=torch.float32)}, 10))
    return ups


@pytest.mark.parametrize(("n", "f", "m"), [(5, 1, 1), (7, 2, 1), (7, 1, 3), (9, 2, 5)])
def test_krum_and_multi_krum_select_and_average_what_numpy_does(n, f, m):
    updates = _toy(n, seed=n * 10 + f, outliers=f)
    x = stacked(updates, "w")
    chosen = ref_krum(x, f, m)
    rule = Krum(f=f, m=m)
    out = merge(rule, {"w": torch.zeros(6)}, updates)["w"]
    assert rule.included == tuple(updates[i].sender for i in chosen)
    assert all(i < n - f for i in chosen)  # no outlier is picked
    np.testing.assert_allclose(out.numpy(), x[chosen].mean(axis=0), rtol=1e-6, atol=1e-7)
    verdicts = rule.verdicts()
    assert {s for s, v in verdicts.items() if v.rejected} == {u.sender for u in updates} - set(rule.included)
    assert all(v.weight == pytest.approx(1 / m) for s, v in verdicts.items() if not v.rejected)
    assert all("not selected" in v.note for v in verdicts.values() if v.rejected)


@settings(max_examples=25, deadline=None)
@given(rounds(min_updates=5, max_updates=8, n_tensors=2), st.integers(0, 1), st.integers(1, 3))
def test_krum_matches_the_reference_on_random_rounds(case, f, m):
    template, updates = case
    rule = Krum(f=f, m=m)
    out = merge(rule, template, updates)
    x = np.concatenate([stacked(updates, k).reshape(len(updates), -1) for k in template], axis=1)
    chosen = ref_krum(x, f, m)
    assert set(rule.included) == {updates[i].sender for i in chosen}
    for k in template:
        want = stacked(updates, k)[chosen].mean(axis=0)
        np.testing.assert_allclose(out[k].numpy(), want, rtol=1e-5, atol=1e-4)


def test_krum_is_an_update_itself_and_ties_go_to_the_lower_address():
    same = torch.tensor([1.0, 2.0])
    updates = [Update(a, {"w": same.clone()}, 1) for a in ("0xCC", "0xbb", "0xAA", "0xdd", "0xee")]
    rule = Krum(f=1)
    out = merge(rule, {"w": torch.zeros(2)}, updates)
    assert torch.equal(out["w"], same)
    assert rule.included == ("0xAA",)  # all scores are 0: the lowest address, case-insensitively


def test_krum_with_too_few_updates_is_a_named_merge_error():
    rule = Krum(f=1)
    rule.begin({"w": torch.zeros(6)})
    for u in _toy(4, seed=1):
        rule.add(u)
    with pytest.raises(TooFewUpdates, match=r"4 update\(s\).*need 5") as info:
        rule.result()
    assert isinstance(info.value, MergeError)
    multi = Krum(f=1, m=5)  # 2f + 3 = 5, but m <= n - f needs 6
    with pytest.raises(TooFewUpdates, match="need 6"):
        merge(multi, {"w": torch.zeros(6)}, _toy(5, seed=2))


def test_krum_lifecycle_like_every_rule():
    rule = Krum(f=0)
    template = {"w": torch.zeros(6)}
    merge(rule, template, _toy(3, seed=4))
    with pytest.raises(InvalidUpdate) as late:
        rule.add(_toy(4, seed=4)[3])
    assert late.value.reason == "late"
    second = _toy(4, seed=5, outliers=1)
    merge(rule, template, second)  # begin() resets
    assert len(rule.included) == 1 and rule.total_samples == 40
    rule.begin(template)
    rule.add(second[0])
    with pytest.raises(InvalidUpdate) as dup:
        rule.add(second[0])
    assert dup.value.reason == "duplicate"


@pytest.mark.parametrize("bad", [{"f": -1}, {"m": 0}, {"f": 1.5}, {"m": True}])
def test_krum_refuses_bad_parameters(bad):
    with pytest.raises(MergeError, match="krum"):
        get_rule("krum", **bad)


def test_the_task_settings_reach_the_rule_and_too_few_peers_are_refused():
    rule = rule_for(SwarmSettings(merge="krum", min_peers=7, krum_f=2, krum_m=3))
    assert isinstance(rule, Krum) and (rule.f, rule.m) == (2, 3)
    with pytest.raises(TaskError, match=r"krum_f = 1.*needs 5 updates.*min_peers = 3"):
        _validate_swarm(SwarmSettings(merge="krum", min_peers=3))
    with pytest.raises(TaskError, match="needs 6"):
        _validate_swarm(SwarmSettings(merge="krum", min_peers=5, krum_m=5))
    _validate_swarm(SwarmSettings(merge="krum", min_peers=5))
    _validate_swarm(SwarmSettings(merge="fedavg", min_peers=2))  # Krum's settings bind only Krum
    with pytest.raises(TaskError, match="krum_f"):
        _validate_swarm(SwarmSettings(krum_f=-1))


def test_tasks_without_krum_settings_keep_their_hash():
    plain = _hashed_swarm(SwarmSettings())
    assert "krum_f" not in plain and "krum_m" not in plain
    # settings added later, also left out of the hash at their defaults
    later = (
        "reveal_window",
        "prox_mu",
        "scaffold",
        "scaffold_variate",
        "local_layers",
        "personalise_steps",
        "batchnorm_stats",
    )
    before = {
        k: v
        for k, v in dataclasses.asdict(SwarmSettings()).items()
        if not k.startswith("krum_") and k not in later
    }
    assert json.dumps(plain, sort_keys=True, default=str) == json.dumps(before, sort_keys=True, default=str)
    assert _hashed_swarm(SwarmSettings(krum_f=2))["krum_f"] == 2
