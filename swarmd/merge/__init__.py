"""Aggregation rules and update validation.

Rules (one per module): `fedavg` (sample-weighted mean, O(model) memory), `median`
(coordinate-wise), `geomedian` (Weiszfeld), `trimmed_mean` (coordinate-wise), `krum` (Krum and
multi-Krum). They all follow the `MergeRule` lifecycle: `begin(template)`, `add(Update)` per site,
`result()`, then `verdicts()` (what the rule did to each update: `RuleVerdict`). The leader calls
`validate()` on each update before `add()`. With `swarm.send = "diff"` the daemon merges diffs and
then `apply_diff(previous_model, merged)`.

State dicts are `dict[str, torch.Tensor]` on the CPU. This package imports only `task` and `errors`.
"""

from swarmd.merge.base import MergeRule, RuleVerdict, Update
from swarmd.merge.diff import apply_diff, make_diff, with_unmasked
from swarmd.merge.fedavg import FedAvg
from swarmd.merge.geomedian import GeoMedian
from swarmd.merge.krum import Krum, TooFewUpdates
from swarmd.merge.median import Median
from swarmd.merge.registry import RULES, get_rule, rule_for
from swarmd.merge.trimmed_mean import TrimmedMean
from swarmd.merge.validate import RejectReason, diff_norm, validate

__all__ = [
    "RULES",
    "FedAvg",
    "GeoMedian",
    "Krum",
    "Median",
    "MergeRule",
    "RejectReason",
    "RuleVerdict",
    "TooFewUpdates",
    "TrimmedMean",
    "Update",
    "apply_diff",
    "diff_norm",
    "get_rule",
    "make_diff",
    "rule_for",
    "validate",
    "with_unmasked",
]
