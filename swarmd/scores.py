"""Held-out scores: each metric of an evaluation is a number, or the reason it is undefined.

A bundle's evaluator can return NaN: ROC AUC on a validation split that holds one class has no
value. Dropping it would make the site vanish from `swarm status`, the metric gauge and the plot, so
an undefined metric is kept, as the string saying why ("one class"). A string is JSON-safe on the
control socket and in the journal, where NaN is not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

Score = float | str  # a str: the metric is undefined, and this is why
Scores = dict[str, Score]

ONE_CLASS = "one class"
NOT_FINITE = "not finite"


def is_defined(value: Score) -> bool:
    return not isinstance(value, str)


def fmt_score(value: Score, digits: int = 3) -> str:
    """ "0.812", or "n/a (one class)" for an undefined metric."""
    return f"n/a ({value})" if isinstance(value, str) else f"{value:.{digits}f}"


def as_number(value: Score) -> float:
    """The value for a gauge or a plot: NaN when undefined (Prometheus and matplotlib both take NaN)."""
    return math.nan if isinstance(value, str) else float(value)


def label_classes(items: Sequence[Mapping[str, Any]]) -> int | None:
    """How many distinct labels a datalist section holds; None when labels are not class-like
    (a segmentation mask's file name is not a class)."""
    seen: set[str] = set()
    for item in items:
        label = item.get("label")
        if isinstance(label, str) or label is None:
            return None
        seen.add(json.dumps(label, sort_keys=True))
    return len(seen)


def scores_of(metrics: Mapping[Any, Any], *, n_classes: int | None) -> Scores:
    """An evaluator's scalar metrics; a non-finite one becomes its reason. `n_classes`: distinct labels
    in the evaluated split (1 explains an undefined AUC). Non-scalar metrics are not reported."""
    out: Scores = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[str(k)] = f
        else:
            out[str(k)] = ONE_CLASS if n_classes == 1 else NOT_FINITE
    return out


def parse_scores(doc: Mapping[Any, Any]) -> Scores:
    """Scores read back from JSON (journal, control socket): numbers stay numbers, strings reasons.
    Raises ValueError on anything else."""
    out: Scores = {}
    for k, v in doc.items():
        if isinstance(v, str):
            out[str(k)] = v
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = float(v)
        else:
            raise ValueError(f"metric {k!r}: {v!r} is neither a number nor a reason")
    return out
