"""Shared tensor maths for the merge rules: working dtypes and the cast back to the model's dtype.

Rules compute in a floating working dtype and return tensors in the template's dtype.
Integer and bool tensors (BatchNorm's num_batches_tracked, masks, flags) are not learned
parameters: every rule merges them with its own formula in float64, then rounds to the nearest
integer (half to even), clamps to the dtype's range and casts back. So a counter stays an integer,
and a bool becomes True where the rule's value rounds to 1 (for fedavg: a weighted majority, a tie
stays False).
"""

from __future__ import annotations

import torch


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a rule computes in: at least float32 for floats, float64 for integers and bools.

    float16/bfloat16 are widened so sums do not overflow or lose the small updates; float32 is not
    widened to float64 so the fedavg accumulator stays one model in size.
    """
    if dtype.is_floating_point:
        return torch.promote_types(dtype, torch.float32)
    return torch.float64


def to_work(t: torch.Tensor) -> torch.Tensor:
    return t.to(work_dtype(t.dtype))


def cast_back(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return `value` in the model's `dtype`; integers and bools are rounded, clamped, then cast."""
    if dtype.is_floating_point or dtype.is_complex:
        return value.to(dtype)
    rounded = torch.round(value)
    if dtype == torch.bool:
        return rounded.clamp(0, 1).to(torch.bool)
    info = torch.iinfo(dtype)
    return rounded.clamp(info.min, info.max).to(dtype)


def stack(values: list[torch.Tensor]) -> torch.Tensor:
    """The N updates of one tensor as one (N, ...) tensor in the working dtype."""
    # Copy into one preallocated buffer: torch.stack of converted copies would hold two N-fold copies.
    first = values[0]
    out = torch.empty((len(values), *first.shape), dtype=work_dtype(first.dtype))
    for i, v in enumerate(values):
        out[i].copy_(v)
    return out


def sorted_stack(values: list[torch.Tensor]) -> torch.Tensor:
    """The stack sorted along the update axis, so every coordinate's values are in order."""
    return stack(values).sort(dim=0).values
