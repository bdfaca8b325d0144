"""Every merge rule against a plain numpy reference, plus the lifecycle and degenerate cases."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from merge_cases import merge, rounds, stacked

from swarmd.errors import InvalidUpdate, MergeError, UpdateRejected
from swarmd.merge import (
    RULES,
    FedAvg,
    GeoMedian,
    Median,
    TrimmedMean,
    Update,
    apply_diff,
    get_rule,
    make_diff,
    rule_for,
)
from swarmd.task import SwarmSettings

# Krum needs n >= 2f + 3 updates: it has its own lifecycle tests (test_merge_krum.py).
GENERIC = sorted(set(RULES) - {"krum"})

SETTINGS = settings(max_examples=40, deadline=None)


def close(got: torch.Tensor, want: np.ndarray, scale: np.ndarray, rtol: float = 1e-5) -> None:
    """float32 results against float64 references: tolerance relative to the inputs' magnitude."""
    atol = rtol * (1.0 + float(np.abs(scale).max(initial=0.0)))
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=rtol, atol=atol)


# --- numpy references --------------------------------------------------------------------------


def ref_fedavg(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.average(x, axis=0, weights=w)


def ref_trimmed(x: np.ndarray, ratio: float) -> np.ndarray:
    n = x.shape[0]
    k = math.floor(ratio * n)
    return np.sort(x, axis=0)[k : n - k].mean(axis=0)


def flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def objective(points: np.ndarray, z: np.ndarray) -> float:
    """sum_i ||x_i - z||: what the geometric median minimises."""
    return float(np.linalg.norm(points - z[None, :], axis=1).sum())


def ref_weiszfeld(points: np.ndarray, iters: int = 2000) -> np.ndarray:
    z = points.mean(axis=0)
    for _ in range(iters):
        d = np.maximum(np.linalg.norm(points - z, axis=1), 1e-12)
        z = (points / d[:, None]).sum(axis=0) / (1.0 / d).sum()
    return z


# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(rounds())
def test_fedavg_is_the_sample_weighted_mean(case):
    template, updates = case
    out = merge(FedAvg(), template, updates)
    w = np.array([u.n_samples for u in updates], dtype=np.float64)
    for name in template:
        x = stacked(updates, name)
        close(out[name], ref_fedavg(x, w), x)
        assert out[name].dtype == torch.float32


@SETTINGS
@given(rounds())
def test_median_is_numpys_median(case):
    template, updates = case
    out = merge(Median(), template, updates)
    for name in template:
        x = stacked(updates, name)
        close(out[name], np.median(x, axis=0), x)


@SETTINGS
@given(rounds(max_updates=12), st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.4, 0.49]))
def test_trimmed_mean_matches_numpy(case, ratio):
    template, updates = case
    out = merge(TrimmedMean(trim_ratio=ratio), template, updates)
    for name in template:
        x = stacked(updates, name)
        close(out[name], ref_trimmed(x, ratio), x)


@SETTINGS
@given(rounds(min_updates=2, max_updates=6))
def test_geomedian_minimises_the_sum_of_distances(case):
    template, updates = case
    rule = GeoMedian(tol=1e-9, max_iter=500)
    out = merge(rule, template, updates)
    points = np.concatenate([flat(stacked(updates, n)) for n in template], axis=1)
    z = np.concatenate([out[n].numpy().astype(np.float64).ravel() for n in template])
    got = objective(points, z)
    slack = 1e-4 * (1.0 + np.abs(points).max())
    # No worse than numpy's long-run Weiszfeld, than any input point, or than the mean.
    assert got <= objective(points, ref_weiszfeld(points)) * (1 + 1e-5) + slack
    for candidate in [*points, points.mean(axis=0)]:
        assert got <= objective(points, candidate) + slack


def same_merge(name: str, template, updates, a, b) -> None:
    """Two merges of the same updates agree, to float32 rounding and the rule's tolerance.

    The geometric median is compared by its sum of distances, not its location: near an update
    the objective is so flat that Weiszfeld's stopping point moves with rounding (hypothesis found
    5 sites whose median lies 0.03 from a doubled update, on a scale of 287, with sums of
    distances 2e-7 apart), so only the objective is determined to the tolerance."""
    if name != "geomedian":
        for key in template:
            close(a[key], b[key].numpy().astype(np.float64), stacked(updates, key), rtol=1e-4)
        return
    points = np.concatenate([flat(stacked(updates, n)) for n in template], axis=1)
    za, zb = (np.concatenate([z[n].numpy().astype(np.float64).ravel() for n in template]) for z in (a, b))
    slack = 1e-4 * (1.0 + np.abs(points).max())
    assert abs(objective(points, za) - objective(points, zb)) <= 1e-5 * objective(points, za) + slack


@SETTINGS
@given(rounds(min_updates=1, max_updates=5), st.sampled_from(GENERIC), st.randoms())
def test_rules_ignore_arrival_order(case, name, rnd):
    template, updates = case
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    a = merge(get_rule(name), template, updates)
    b = merge(get_rule(name), template, shuffled)
    same_merge(name, template, updates, a, b)


def _near_a_doubled_update() -> tuple[dict[str, torch.Tensor], list[Update]]:
    """Hypothesis's find: the median lies 0.03 off the two (0, 0) sites, where Weiszfeld crawls."""
    points = [(4.0, 1.0), (0.0, 0.0), (0.0, -287.0), (0.0, 0.0), (0.0, -284.0)]
    template = {"layer0.weight": torch.tensor(0.0), "layer1.weight": torch.tensor(0.0)}
    updates = [
        Update(f"site{i}", {"layer0.weight": torch.tensor(x), "layer1.weight": torch.tensor(y)}, 1)
        for i, (x, y) in enumerate(points)
    ]
    return template, updates


@SETTINGS
@given(rounds(min_updates=1, max_updates=5), st.sampled_from(GENERIC))
@example(_near_a_doubled_update(), "geomedian")
def test_merging_diffs_then_applying_equals_merging_weights(case, name):
    """Every rule commutes with a shift, so send="diff" gives the same model as send="weights"."""
    template, updates = case
    base = {k: v + 3.5 for k, v in updates[0].state.items()}
    diffs = [Update(u.sender, make_diff(u.state, base), u.n_samples) for u in updates]
    via_diffs = apply_diff(base, merge(get_rule(name), template, diffs))
    direct = merge(get_rule(name), template, updates)
    same_merge(name, template, updates, via_diffs, direct)


@SETTINGS
@given(rounds(min_updates=1, max_updates=1, n_tensors=3), st.sampled_from(GENERIC), st.integers(1, 5))
def test_identical_updates_merge_to_themselves(case, name, copies):
    template, (only,) = case
    updates = [Update(f"site{i}", only.state, only.n_samples + i) for i in range(copies)]
    out = merge(get_rule(name), template, updates)
    for key in template:
        x = only.state[key].numpy().astype(np.float64)
        close(out[key], x, x, rtol=1e-6)


@SETTINGS
@given(rounds(min_updates=2, max_updates=4), st.integers(2, 4))
def test_fedavg_weight_equals_repetition(case, k):
    """An update with k times the samples counts as much as k copies of it."""
    template, updates = case
    heavy = [Update(updates[0].sender, updates[0].state, updates[0].n_samples * k), *updates[1:]]
    repeated = [
        *(Update(f"copy{i}", updates[0].state, updates[0].n_samples) for i in range(k)),
        *updates[1:],
    ]
    a, b = merge(FedAvg(), template, heavy), merge(FedAvg(), template, repeated)
    for key in template:
        close(a[key], b[key].numpy().astype(np.float64), stacked(updates, key))


@SETTINGS
@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=6),
    st.lists(st.integers(1, 50), min_size=6, max_size=6),
    st.sampled_from(GENERIC),
)
def test_integer_tensors_merge_with_the_rule_then_round(counters, samples, name):
    """num_batches_tracked-style counters: the rule's value, rounded half to even, still int64."""
    template = {"bn.num_batches_tracked": torch.tensor(0), "bn.weight": torch.zeros(2)}
    updates = [
        Update(
            f"s{i}", {"bn.num_batches_tracked": torch.tensor(c), "bn.weight": torch.full((2,), float(i))}, n
        )
        for i, (c, n) in enumerate(zip(counters, samples, strict=False))
    ]
    out = merge(get_rule(name), template, updates)["bn.num_batches_tracked"]
    x = np.array(counters, dtype=np.float64)
    w = np.array(samples[: len(counters)], dtype=np.float64)
    want = {
        "fedavg": ref_fedavg(x, w),
        "median": np.median(x),
        "geomedian": np.median(x),  # counters are not part of the Weiszfeld vector
        "trimmed_mean": ref_trimmed(x[:, None], 0.1)[0],
    }[name]
    assert out.dtype == torch.int64
    assert int(out) == int(np.round(want))


def test_bool_tensors_take_the_weighted_majority():
    template = {"mask": torch.zeros(3, dtype=torch.bool), "w": torch.zeros(1)}
    masks = [
        torch.tensor([True, True, False]),
        torch.tensor([True, False, False]),
        torch.tensor([False, True, True]),
    ]
    counts = [1, 1, 5]
    updates = [Update(f"s{i}", {"mask": masks[i], "w": torch.zeros(1)}, counts[i]) for i in range(3)]
    out = merge(FedAvg(), template, updates)["mask"]
    assert out.dtype == torch.bool
    assert out.tolist() == [False, True, True]  # the site with 5 of 7 samples wins each coordinate


@pytest.mark.parametrize("name", GENERIC)
def test_half_precision_models_come_back_in_their_dtype(name):
    template = {"w": torch.zeros(4, dtype=torch.float16)}
    updates = [Update(f"s{i}", {"w": torch.full((4,), 60000.0, dtype=torch.float16)}, 1000) for i in range(3)]
    out = merge(get_rule(name), template, updates)["w"]
    assert out.dtype == torch.float16
    # 3 * 1000 * 60000 overflows float16; the working dtype does not.
    assert torch.equal(out, torch.full((4,), 60000.0, dtype=torch.float16))


@pytest.mark.parametrize("rule", [Median(), TrimmedMean(trim_ratio=0.25)], ids=lambda r: r.name)
def test_coordinate_rules_work_slice_by_slice(rule, monkeypatch):
    """Big tensors are reduced a slice at a time; slices that split rows must not change the result."""
    import swarmd.merge.maths

    monkeypatch.setattr(swarmd.merge.maths, "CHUNK", 7)
    gen = torch.Generator().manual_seed(3)
    updates = [Update(f"s{i}", {"w": torch.randn(5, 6, generator=gen)}, 1) for i in range(6)]
    x = stacked(updates, "w")
    want = np.median(x, axis=0) if isinstance(rule, Median) else ref_trimmed(x, 0.25)
    close(merge(rule, {"w": torch.zeros(5, 6)}, updates)["w"], want, x)


# --- robustness: what the robust rules are for ---------------------------------------------------


@pytest.mark.parametrize("rule", [Median(), GeoMedian(), TrimmedMean(trim_ratio=0.2)], ids=lambda r: r.name)
def test_robust_rules_resist_one_outlier_that_moves_fedavg(rule):
    gen = torch.Generator().manual_seed(7)
    honest = [Update(f"h{i}", {"w": torch.randn(50, generator=gen) * 0.01}, 10) for i in range(4)]
    attacker = Update("evil", {"w": torch.full((50,), 1e6)}, 10_000)
    template = {"w": torch.zeros(50)}
    assert float(merge(FedAvg(), template, [*honest, attacker])["w"].abs().max()) > 1e5
    assert float(merge(rule, template, [*honest, attacker])["w"].abs().max()) < 0.1


def test_geomedian_lands_exactly_on_an_update_that_is_the_median():
    """Two sites agree, two disagree in different directions: the agreed point is the median.
    Plain Weiszfeld only creeps towards it; the rule must return it exactly."""
    template = {"a": torch.zeros(1), "b": torch.zeros(1)}
    pts = [(0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (2.0, 3.0)]
    updates = [
        Update(f"s{i}", {"a": torch.tensor([x]), "b": torch.tensor([y])}, 1) for i, (x, y) in enumerate(pts)
    ]
    out = merge(GeoMedian(), template, updates)
    assert float(out["a"]) == 0.0 and float(out["b"]) == 0.0


def test_geomedian_takes_updates_a_subnormal_apart_as_one_point():
    """Found by hypothesis in CI's seed: updates 1.4e-45 apart made w / gap overflow float32."""
    tiny = torch.tensor([1.4e-45])
    assert float(tiny) > 0.0  # a real subnormal, not flushed to zero
    updates = [
        Update("a", {"w": torch.zeros(1)}, 1),
        Update("b", {"w": tiny}, 1),
        Update("c", {"w": torch.ones(1)}, 1),
    ]
    out = merge(GeoMedian(), {"w": torch.zeros(1)}, updates)["w"]
    assert torch.isfinite(out).all() and abs(float(out)) <= 1e-8  # the doubled point is the median


def test_geomedian_of_two_updates_is_their_midpoint():
    """With two sites every point between them is a median; the rule picks the symmetric one."""
    a, b = torch.tensor([0.0, 4.0]), torch.tensor([2.0, 0.0])
    updates = [Update("a", {"w": a}, 1), Update("b", {"w": b}, 1)]
    assert torch.allclose(merge(GeoMedian(), {"w": torch.zeros(2)}, updates)["w"], torch.tensor([1.0, 2.0]))


def test_geomedian_stops_at_its_iteration_cap():
    gen = torch.Generator().manual_seed(1)
    updates = [Update(f"s{i}", {"w": torch.randn(8, generator=gen)}, 1) for i in range(5)]
    capped = GeoMedian(tol=1e-12, max_iter=3)
    merge(capped, {"w": torch.zeros(8)}, updates)
    assert capped.iterations == 3
    loose = GeoMedian(tol=1e-2, max_iter=1000)
    merge(loose, {"w": torch.zeros(8)}, updates)
    assert 1 <= loose.iterations < 1000


def test_geomedian_weighted_option_uses_sample_counts():
    template = {"w": torch.zeros(1)}
    updates = [Update("a", {"w": torch.tensor([0.0])}, 1), Update("b", {"w": torch.tensor([1.0])}, 9)]
    assert float(merge(GeoMedian(weighted=True), template, updates)["w"]) == pytest.approx(1.0, abs=1e-4)


# --- lifecycle and degenerate cases ---------------------------------------------------------------


@pytest.mark.parametrize("name", GENERIC)
def test_result_without_updates_is_a_merge_error(name):
    rule = get_rule(name)
    with pytest.raises(MergeError, match="begin"):
        rule.result()
    rule.begin({"w": torch.zeros(2)})
    with pytest.raises(MergeError, match="no update"):
        rule.result()


@pytest.mark.parametrize("name", GENERIC)
def test_begin_resets_the_rule_for_the_next_round(name):
    rule = get_rule(name)
    template = {"w": torch.zeros(3)}
    merge(rule, template, [Update("a", {"w": torch.full((3,), 100.0)}, 5)])
    second = merge(
        rule, template, [Update("a", {"w": torch.ones(3)}, 2), Update("b", {"w": torch.ones(3)}, 2)]
    )
    assert torch.allclose(second["w"], torch.ones(3))
    assert rule.included == ("a", "b")
    assert rule.total_samples == 4


@pytest.mark.parametrize("name", GENERIC)
def test_a_sender_counts_once_per_round(name):
    rule = get_rule(name)
    rule.begin({"w": torch.zeros(1)})
    rule.add(Update("a", {"w": torch.ones(1)}, 1))
    with pytest.raises(InvalidUpdate) as info:
        rule.add(Update("a", {"w": torch.ones(1)}, 1))
    assert info.value.reason == "duplicate" and info.value.sender == "a"


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "7"])
def test_sample_counts_must_be_positive_integers(bad):
    with pytest.raises(UpdateRejected) as info:
        Update("a", {"w": torch.ones(1)}, bad)
    assert info.value.reason == "samples"


@pytest.mark.parametrize("name", GENERIC)
def test_add_refuses_a_structurally_wrong_update_and_keeps_the_round(name):
    rule = get_rule(name)
    rule.begin({"w": torch.zeros(2)})
    with pytest.raises(InvalidUpdate) as info:
        rule.add(Update("bad", {"w": torch.zeros(3)}, 1))
    assert info.value.reason == "shape"
    rule.add(Update("good", {"w": torch.ones(2)}, 1))
    assert rule.included == ("good",)
    assert torch.equal(rule.result()["w"], torch.ones(2))


@pytest.mark.parametrize("name", GENERIC)
def test_result_closes_the_round(name):
    """A late update is rejected (not folded into a model already handed out); result() is stable."""
    rule = get_rule(name)
    rule.begin({"w": torch.zeros(2)})
    rule.add(Update("a", {"w": torch.ones(2)}, 4))
    first = rule.result()
    with pytest.raises(InvalidUpdate) as info:
        rule.add(Update("b", {"w": torch.full((2,), 9.0)}, 4))
    assert info.value.reason == "late"
    assert torch.equal(rule.result()["w"], first["w"]) and rule.included == ("a",)
    rule.begin({"w": torch.zeros(2)})
    rule.add(Update("b", {"w": torch.full((2,), 9.0)}, 4))
    assert torch.equal(rule.result()["w"], torch.full((2,), 9.0))


def test_fedavg_streams_and_keeps_no_reference_to_updates():
    rule = FedAvg()
    rule.begin({"w": torch.zeros(1000)})
    tensor = torch.ones(1000)
    ref = weakref.ref(tensor)
    rule.add(Update("a", {"w": tensor}, 3))
    del tensor
    gc.collect()
    assert ref() is None
    assert FedAvg.streaming and not any(cls.streaming for cls in (Median, GeoMedian, TrimmedMean))


def test_the_template_values_are_not_kept():
    template = {"w": torch.zeros(1000)}
    ref = weakref.ref(template["w"])
    rule = Median()
    rule.begin(template)
    del template
    gc.collect()
    assert ref() is None


def test_begin_refuses_an_empty_or_odd_template():
    with pytest.raises(MergeError):
        FedAvg().begin({})
    with pytest.raises(MergeError, match="not a tensor"):
        FedAvg().begin({"w": [1.0]})  # type: ignore[dict-item]


# --- registry ----------------------------------------------------------------------------------


def test_registry_knows_every_rule_the_task_accepts():
    from swarmd.task import MERGE_RULES

    assert set(RULES) == set(MERGE_RULES)
    for name in MERGE_RULES:
        assert get_rule(name).name == name


def test_registry_refuses_unknown_rules_and_parameters():
    with pytest.raises(MergeError, match="unknown merge rule") as info:
        get_rule("bulyan")
    assert "fedavg" in str(info.value) and "krum" in str(info.value)
    with pytest.raises(MergeError, match="trim_ratio"):
        get_rule("median", trim_ratio=0.1)
    with pytest.raises(MergeError, match=r"\[0, 0.5\)"):
        get_rule("trimmed_mean", trim_ratio=0.5)
    with pytest.raises(MergeError, match="max_iter"):
        get_rule("geomedian", max_iter=0)


def test_rule_for_reads_the_task_settings():
    rule = rule_for(SwarmSettings(merge="trimmed_mean", trim_ratio=0.3))
    assert isinstance(rule, TrimmedMean) and rule.trim_ratio == 0.3
    assert isinstance(rule_for(SwarmSettings()), FedAvg)
