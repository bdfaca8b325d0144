"""validate(): every rejection has its reason label; valid updates pass; norms match numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from merge_cases import rounds

from swarmd.errors import InvalidUpdate, MergeError, UpdateRejected
from swarmd.merge import RejectReason, diff_norm, validate

TEMPLATE = {
    "conv.weight": torch.zeros(2, 3),
    "conv.bias": torch.zeros(2),
    "bn.num_batches_tracked": torch.tensor(0),
}


def state(**changes):
    out = {k: v.clone() for k, v in TEMPLATE.items()}
    out.update(changes)
    return out


def reason_of(update, **kwargs) -> str:
    with pytest.raises(InvalidUpdate) as info:
        validate(update, TEMPLATE, **kwargs)
    assert isinstance(info.value, UpdateRejected) and isinstance(info.value, MergeError)
    assert str(info.value)  # a readable message, not an empty one
    return info.value.reason


def test_a_matching_update_passes():
    validate(state(), TEMPLATE)
    validate(state(), TEMPLATE, norm_bound=1.0, reference=TEMPLATE)
    validate(state(), TEMPLATE, norm_bound=1.0, is_diff=True)


def test_missing_and_extra_names_are_named():
    missing = state()
    del missing["conv.bias"]
    with pytest.raises(InvalidUpdate, match=r"missing conv\.bias") as info:
        validate(missing, TEMPLATE, sender="0xabc")
    assert info.value.reason == RejectReason.NAMES.value == "names"
    assert info.value.sender == "0xabc" and "0xabc" in str(info.value)
    assert reason_of(state(extra=torch.zeros(1))) == "names"


def test_many_wrong_names_give_a_bounded_message():
    flood = {f"junk{i}": torch.zeros(1) for i in range(10_000)}
    with pytest.raises(InvalidUpdate) as info:
        validate(flood, TEMPLATE)
    assert len(str(info.value)) < 400 and "more" in str(info.value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"conv.weight": torch.zeros(3, 2)}, "shape"),
        ({"conv.weight": torch.zeros(6)}, "shape"),
        ({"conv.bias": torch.zeros(2, dtype=torch.float64)}, "dtype"),
        ({"bn.num_batches_tracked": torch.tensor(0.0)}, "dtype"),
        ({"conv.bias": np.zeros(2, dtype=np.float32)}, "type"),
        ({"conv.bias": [0.0, 0.0]}, "type"),
    ],
)
def test_structure_mismatches(change, reason):
    assert reason_of(state(**change)) == reason


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_any_non_finite_value_is_rejected(position, bad):
    w = torch.zeros(2, 3)
    w.view(-1)[position] = bad
    assert reason_of(state(**{"conv.weight": w})) == "nonfinite"


def test_norm_bound_on_weights_measures_the_distance_to_the_reference():
    reference = state(**{"conv.weight": torch.full((2, 3), 10.0)})
    near = state(**{"conv.weight": torch.full((2, 3), 10.0), "conv.bias": torch.tensor([3.0, 4.0])})
    validate(near, TEMPLATE, norm_bound=5.0, reference=reference)  # exactly on the bound passes
    assert reason_of(near, norm_bound=4.99, reference=reference) == "norm"
    # Against the zero model the same update is far away: the reference matters.
    assert reason_of(near, norm_bound=5.0, reference=TEMPLATE) == "norm"


def test_norm_bound_on_a_diff_measures_the_diff_itself():
    diff = state(**{"conv.bias": torch.tensor([3.0, 4.0])})
    validate(diff, TEMPLATE, norm_bound=5.0, is_diff=True)
    assert reason_of(diff, norm_bound=4.0, is_diff=True) == "norm"


def test_counters_do_not_count_towards_the_norm():
    big_counter = state(**{"bn.num_batches_tracked": torch.tensor(10**9)})
    validate(big_counter, TEMPLATE, norm_bound=1e-3, is_diff=True)


def test_norm_bound_misuse_is_a_merge_error_not_a_rejection():
    with pytest.raises(MergeError, match="reference") as info:
        validate(state(), TEMPLATE, norm_bound=1.0)
    assert not isinstance(info.value, UpdateRejected)
    wrong_reference = {"conv.weight": torch.zeros(2, 3)}
    with pytest.raises(MergeError, match="reference model") as info:
        validate(state(), TEMPLATE, norm_bound=1.0, reference=wrong_reference)
    assert not isinstance(info.value, UpdateRejected)
    with pytest.raises(MergeError, match="norm_bound"):
        validate(state(), TEMPLATE, norm_bound=-1.0)


def test_structure_is_checked_before_values():
    """A wrong shape holding NaN reports the shape: the cheapest, most telling reason first."""
    assert reason_of(state(**{"conv.weight": torch.full((3,), math.nan)})) == "shape"


@settings(max_examples=40, deadline=None)
@given(rounds(min_updates=2, max_updates=2, n_tensors=3))
def test_diff_norm_is_numpys_norm_of_the_flattened_difference(case):
    _, (a, b) = case
    want = np.linalg.norm(
        np.concatenate(
            [(a.state[k].numpy().astype(np.float64) - b.state[k].numpy()).ravel() for k in a.state]
        )
    )
    assert diff_norm(a.state, b.state) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert diff_norm(a.state, None) == pytest.approx(
        np.linalg.norm(np.concatenate([a.state[k].numpy().astype(np.float64).ravel() for k in a.state])),
        rel=1e-9,
        abs=1e-9,
    )
