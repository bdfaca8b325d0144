"""Shared tensor maths for the merge rules: working dtypes, the cast back to the model's dtype, and the
reductions that make a merge reproducible.

Reproducible means bit-identical for the same inputs whatever the number of torch threads and
whatever the SIMD width of the CPU: a sum over many values (`sum_squares`, `row_sum`) is built only
from element-wise IEEE-754 operations in a fixed order plus `math.fsum` (correctly rounded), never
from torch's reduction kernels, whose order depends on threads and vector width. Element-wise add,
sub, mul and div round once and identically on every IEEE CPU; a multiply-add is written as two
operations, or is exact (see `fedavg`), so fused multiply-add cannot change a result.

Rules compute in a floating working dtype and return tensors in the template's dtype.
Integer and bool tensors (BatchNorm's num_batches_tracked, masks, flags) are not learned
parameters: every rule merges them with its own formula in float64, then rounds to the nearest
integer (half to even), clamps to the dtype's range and casts back. So a counter stays an integer,
and a bool becomes True where the rule's value rounds to 1 (for fedavg: a weighted majority, a tie
stays False).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

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


# Coordinates per slice in the robust rules: each update's slice of one tensor is read (from the store,
# for the leader's updates), stacked and sorted at a time, so the rules hold N x 64k values of input, not
# N models. A multiple of ROW, so a norm summed slice by slice is the same as over the whole tensor.
CHUNK = 1 << 16


def stack(values: list[torch.Tensor]) -> torch.Tensor:
    """The N updates of one slice as one (N, ...) tensor in the working dtype."""
    # Copy into one preallocated buffer: torch.stack of converted copies would hold two N-fold copies.
    first = values[0]
    out = torch.empty((len(values), *first.shape), dtype=work_dtype(first.dtype))
    for i, v in enumerate(values):
        out[i].copy_(v)
    return out


def columnwise(
    chunks: Iterable[tuple[int, list[torch.Tensor]]],
    like: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Apply `reduce` (an (N, k) tensor -> a (k,) tensor) to every coordinate of a tensor shaped like
    `like`, a slice at a time: `chunks` gives (start, the N updates' flat values from start on).

    Returns a tensor shaped like `like`, in the working dtype.
    """
    out = torch.empty(like.numel(), dtype=work_dtype(like.dtype))
    for start, values in chunks:
        block = stack(values)
        out[start : start + block.shape[1]] = reduce(block)
    return out.reshape(like.shape)


# Row width of the fixed-order reductions: a power of two, so halving stays even.
ROW = 1024


def sum_squares(t: torch.Tensor) -> float:
    """sum(t**2) in float64, the same bits on any thread count and any CPU (see the module docstring).

    The values are squared in float64 (exact for float32 input), zero-padded to rows of ROW, each row
    summed by pairwise halving (element-wise adds in a fixed tree) and the row sums added by fsum.
    """
    return math.fsum(square_rows(t))


def square_rows(t: torch.Tensor) -> list[float]:
    """The row sums `sum_squares` adds up: sum_squares of a tensor is math.fsum of the row sums of its
    slices, concatenated, when every slice but the last has a multiple of ROW elements (CHUNK has)."""
    flat = t.reshape(-1).to(torch.float64)
    return _row_sums(flat * flat)


def row_sum(rows: torch.Tensor) -> torch.Tensor:
    """The (N, ...) tensor summed over its first axis in float64, row by row in index order."""
    acc = rows[0].to(torch.float64, copy=True)
    for i in range(1, rows.shape[0]):
        acc.add_(rows[i])
    return acc


def _row_sums(flat: torch.Tensor) -> list[float]:
    n = flat.numel()
    if n == 0:
        return []
    pad = (-n) % ROW
    block = torch.cat([flat, flat.new_zeros(pad)]) if pad else flat
    block = block.reshape(-1, ROW)
    width = ROW
    while width > 1:
        width //= 2
        block = block[:, :width] + block[:, width:]
    return block.reshape(-1).tolist()


def sorted_rows(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, k) block sorted along the update axis, so every coordinate's values are in order, and
    which update each sorted value came from (a stable sort: equal values keep address order)."""
    ordered = block.sort(dim=0, stable=True)
    return ordered.values, ordered.indices
