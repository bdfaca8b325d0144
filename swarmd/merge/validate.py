"""Update validation: the checks an update passes before any merge rule sees it.

The leader runs `validate()` on every received update: its names, shapes and dtypes must equal the
task model's, every floating value must be finite, and, when the task sets a norm bound, the L2
norm of its difference to the previous merged model must not exceed it. A failure raises
`InvalidUpdate` whose `reason` is one `RejectReason` value, so metrics and the ledger's excluded
list speak one vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum

import torch

from swarmd.codec import first_nonfinite
from swarmd.errors import InvalidUpdate, MergeError
from swarmd.merge.maths import sum_squares

# Shown names are capped so a wildly wrong update does not produce a megabyte of message.
_SHOWN = 5


class RejectReason(str, Enum):
    """Why an update was refused; the value is the label used in metrics and logs."""

    NAMES = "names"
    TYPE = "type"
    SHAPE = "shape"
    DTYPE = "dtype"
    NONFINITE = "nonfinite"
    NORM = "norm"
    SAMPLES = "samples"
    DUPLICATE = "duplicate"
    LATE = "late"


def reject(reason: RejectReason, message: str, *, sender: str = "") -> InvalidUpdate:
    """The error for one failed check (returned, so callers write `raise reject(...)`)."""
    return InvalidUpdate(reason.value, message, sender=sender)


def _names(names: set[str]) -> str:
    shown = sorted(names)[:_SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def check_structure(
    state: Mapping[str, object], template: Mapping[str, torch.Tensor], sender: str = ""
) -> None:
    """Names, tensor types, shapes and dtypes equal the template's. Cheap: reads no values."""
    missing = set(template) - set(state)
    extra = set(state) - set(template)
    if missing or extra:
        parts = ([f"missing {_names(missing)}"] if missing else []) + (
            [f"unexpected {_names(extra)}"] if extra else []
        )
        raise reject(
            RejectReason.NAMES, "tensor names differ from the model's: " + "; ".join(parts), sender=sender
        )
    for name, want in template.items():
        got = state[name]
        if not isinstance(got, torch.Tensor):
            raise reject(RejectReason.TYPE, f"{name} is a {type(got).__name__}, not a tensor", sender=sender)
        if got.shape != want.shape:
            raise reject(
                RejectReason.SHAPE,
                f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}",
                sender=sender,
            )
        if got.dtype != want.dtype:
            raise reject(
                RejectReason.DTYPE, f"{name} has dtype {got.dtype}, expected {want.dtype}", sender=sender
            )


def check_finite(state: Mapping[str, torch.Tensor], sender: str = "") -> None:
    """Every floating value is finite (integer and bool tensors cannot hold NaN or inf)."""
    name = first_nonfinite(state)
    if name is not None:
        bad = int((~torch.isfinite(state[name])).sum())
        raise reject(RejectReason.NONFINITE, f"{name} holds {bad} NaN or infinite value(s)", sender=sender)


def diff_norm(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor] | None) -> float:
    """L2 norm over all floating tensors of `state - reference` (of `state` when reference is None).

    Integer and bool tensors (counters such as BatchNorm's num_batches_tracked, flags) are left out:
    they are not learned parameters and would swamp the norm. Computed tensor by tensor in float64,
    so no model-sized temporary is built, with `sum_squares`: the same bits on any thread count, so
    an auditor rerunning the check reaches the leader's verdict on an update at the bound.
    """
    total = 0.0
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        d = t.double() if reference is None else t.double() - reference[name].double()
        total += sum_squares(d)
    return math.sqrt(total)


def validate(
    state: Mapping[str, object],
    template: Mapping[str, torch.Tensor],
    *,
    norm_bound: float = 0.0,
    reference: Mapping[str, torch.Tensor] | None = None,
    is_diff: bool = False,
    sender: str = "",
) -> None:
    """Check an update against the task model; raise `InvalidUpdate` (an UpdateRejected) on the first failure.

    `norm_bound` > 0 bounds the L2 norm of the update's difference to the previous merged model:
    pass that model as `reference` when the update holds weights, or `is_diff=True` when it already
    is a difference. A norm bound with neither is a caller bug and raises MergeError.
    """
    if norm_bound < 0 or math.isnan(norm_bound):
        raise MergeError(f"norm_bound must be >= 0 (0 disables it), got {norm_bound}")
    check_structure(state, template, sender)
    tensors: Mapping[str, torch.Tensor] = state  # type: ignore[assignment]  # checked just above
    check_finite(tensors, sender)
    if norm_bound == 0:
        return
    if is_diff:
        reference = None
    elif reference is None:
        raise MergeError("a norm bound on weights needs the previous model as `reference` (or is_diff=True)")
    else:
        try:
            check_structure(reference, template)
        except InvalidUpdate as exc:
            raise MergeError(f"the reference model does not match the task model: {exc}") from None
    norm = diff_norm(tensors, reference)
    if norm > norm_bound:
        raise reject(
            RejectReason.NORM,
            f"update norm {norm:.6g} exceeds the task's bound {norm_bound:.6g}",
            sender=sender,
        )
