"""Weight differences: `make_diff(new, base)` and its inverse `apply_diff(base, diff)`.

When the task sets `swarm.send = "diff"`, each site sends `U_i = W_i - M(r-1)`. The daemon merges
the diffs with the task's rule and then calls `apply_diff(M(r-1), merged_diff)` once to get `M_r`.
Every rule here is translation-equivariant (rule(x_i - b) = rule(x_i) - b, up to rounding), so
merging diffs gives the same model as merging weights; diffs only change what travels and what the
norm bound measures.

Integers are subtracted and added like floats (a counter's diff is how far it advanced). Bools
have no difference: a bool entry of a diff carries the new value itself, and `apply_diff` takes it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from swarmd.merge.validate import check_structure


def make_diff(new: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """new - base, per tensor and in base's dtypes. Raises InvalidUpdate when the structures differ."""
    check_structure(new, base)
    return {name: new[name] if b.dtype == torch.bool else new[name] - b for name, b in base.items()}


def apply_diff(base: Mapping[str, torch.Tensor], diff: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """base + diff, per tensor and in base's dtypes. Raises InvalidUpdate when the structures differ."""
    check_structure(diff, base)
    return {name: diff[name].clone() if b.dtype == torch.bool else b + diff[name] for name, b in base.items()}


def with_unmasked(
    base: Mapping[str, torch.Tensor], mean: Mapping[str, torch.Tensor], *, is_diff: bool
) -> dict[str, torch.Tensor]:
    """The merged state (or diff) of a secure-aggregation round from its unmasked float mean: tensors
    that are not floats (counters) are not masked, so they stay the base's (a zero diff). The leader and
    `swarm ledger audit` both build it here."""
    out = {
        k: torch.zeros_like(v) if is_diff else v.clone() for k, v in base.items() if not v.is_floating_point()
    }
    out.update(mean)
    return out
