"""make_diff / apply_diff: exact inverses for floats, integers and bools; structure is checked."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.errors import InvalidUpdate
from swarmd.merge import apply_diff, make_diff

INTS = st.lists(st.integers(-(2**31), 2**31), min_size=3, max_size=3)
BOOLS = st.lists(st.booleans(), min_size=3, max_size=3)
SMALL = st.lists(st.integers(-1000, 1000), min_size=3, max_size=3)


@settings(max_examples=50, deadline=None)
@given(SMALL, SMALL, INTS, INTS, BOOLS, BOOLS)
def test_apply_diff_inverts_make_diff(w_new, w_base, c_new, c_base, m_new, m_base):
    # Integer-valued floats keep the float round trip exact, so equality can be asserted.
    new = {
        "w": torch.tensor(w_new, dtype=torch.float32) / 8,
        "count": torch.tensor(c_new, dtype=torch.int64),
        "mask": torch.tensor(m_new),
    }
    base = {
        "w": torch.tensor(w_base, dtype=torch.float32) / 8,
        "count": torch.tensor(c_base, dtype=torch.int64),
        "mask": torch.tensor(m_base),
    }
    diff = make_diff(new, base)
    assert diff["count"].dtype == torch.int64 and diff["mask"].dtype == torch.bool
    back = apply_diff(base, diff)
    for key in new:
        assert back[key].dtype == new[key].dtype
        assert torch.equal(back[key], new[key])


def test_apply_diff_does_not_alias_its_inputs():
    base = {"w": torch.zeros(2), "mask": torch.tensor([True, False])}
    diff = {"w": torch.ones(2), "mask": torch.tensor([False, False])}
    out = apply_diff(base, diff)
    out["w"].add_(5)
    out["mask"].fill_(True)
    assert torch.equal(base["w"], torch.zeros(2)) and torch.equal(diff["mask"], torch.tensor([False, False]))


@pytest.mark.parametrize(
    "diff",
    [{"w": torch.zeros(3)}, {"w": torch.zeros(2, dtype=torch.float64)}, {"v": torch.zeros(2)}],
)
def test_apply_diff_refuses_a_diff_of_another_model(diff):
    with pytest.raises(InvalidUpdate):
        apply_diff({"w": torch.zeros(2)}, diff)
