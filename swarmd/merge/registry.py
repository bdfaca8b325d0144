"""Rule names -> rule classes, as the task names them in `swarm.merge`."""

from __future__ import annotations

import inspect

from swarmd.errors import MergeError
from swarmd.merge.base import MergeRule
from swarmd.merge.fedavg import FedAvg
from swarmd.merge.geomedian import GeoMedian
from swarmd.merge.krum import Krum
from swarmd.merge.median import Median
from swarmd.merge.scaffold import Scaffold
from swarmd.merge.trimmed_mean import TrimmedMean
from swarmd.task import SwarmSettings

RULES: dict[str, type[MergeRule]] = {
    FedAvg.name: FedAvg,
    Median.name: Median,
    GeoMedian.name: GeoMedian,
    TrimmedMean.name: TrimmedMean,
    Krum.name: Krum,
}


def get_rule(name: str, **params: object) -> MergeRule:
    """A fresh rule instance. Unknown names or parameters raise MergeError, never TypeError."""
    cls = RULES.get(name)
    if cls is None:
        raise MergeError(f"unknown merge rule {name!r}", hint=f"choose one of {', '.join(sorted(RULES))}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - accepted
    if unknown:
        allowed = ", ".join(sorted(accepted)) or "none"
        raise MergeError(
            f"merge rule {name!r} takes no parameter(s) {', '.join(sorted(unknown))} (takes: {allowed})"
        )
    return cls(**params)


def rule_for(settings: SwarmSettings) -> MergeRule:
    """The rule a task's swarm settings ask for, with the task's parameters."""
    if settings.scaffold:  # not a `swarm.merge` value: `swarm.scaffold = true` with merge = "fedavg"
        return Scaffold()
    if settings.merge == TrimmedMean.name:
        return get_rule(settings.merge, trim_ratio=settings.trim_ratio)
    if settings.merge == Krum.name:
        return get_rule(settings.merge, f=settings.krum_f, m=settings.krum_m)
    return get_rule(settings.merge)
