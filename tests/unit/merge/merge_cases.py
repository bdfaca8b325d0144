"""Hypothesis strategies shared by the merge tests: small models and rounds of updates."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from swarmd.merge import Update

# Values stay in a range where float32 sums of a few updates are exact to ~1e-6 relative.
VALUE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)
SHAPE = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def rounds(draw, min_updates: int = 1, max_updates: int = 6, n_tensors: int = 2):
    """(template, updates): `n_tensors` float32 tensors and up to `max_updates` updates of them."""
    shapes = [draw(SHAPE) for _ in range(n_tensors)]
    n = draw(st.integers(min_updates, max_updates))
    updates = []
    for i in range(n):
        state = {}
        for j, shape in enumerate(shapes):
            size = int(np.prod(shape)) if shape else 1
            values = draw(st.lists(VALUE, min_size=size, max_size=size))
            state[f"layer{j}.weight"] = torch.tensor(values, dtype=torch.float32).reshape(shape)
        updates.append(Update(f"site{i}", state, draw(st.integers(1, 1000))))
    template = {k: torch.zeros_like(v) for k, v in updates[0].state.items()}
    return template, updates


def stacked(updates: list[Update], name: str) -> np.ndarray:
    """The N values of one tensor as a float64 (N, ...) numpy array: the reference's input."""
    return np.stack([u.state[name].numpy().astype(np.float64) for u in updates])


def merge(rule, template, updates):
    rule.begin(template)
    for u in updates:
        rule.add(u)
    return rule.result()
