"""`[exchange] compression` and `topk_ratio` in swarm.toml: what validates, what is refused with which
message (weights, secure aggregation, top-k under a robust rule), and the task hash (defaults left
out, each non-default key in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.errors import TaskError
from swarmd.task import Task, canonical_task, parse_task

TASK = {"name": "demo", "bundle": "bundle"}
DIFF = {"send": "diff"}


def _task(
    root: Path, exchange: dict[str, object], swarm: dict[str, object] | None = None, **more: object
) -> Task:
    return parse_task({"task": TASK, "swarm": swarm or DIFF, "exchange": exchange, **more}, root)


def test_each_mode_validates_with_diffs_and_enters_the_hash(root: Path) -> None:
    plain = _task(root, {})
    hashes = {plain.hash}
    for mode in ("fp16", "bf16", "int8", "topk"):
        task = _task(root, {"compression": mode})
        assert task.exchange.compression == mode
        assert f'"exchange":{{"compression":"{mode}"}}'.encode() in canonical_task(task)
        hashes.add(task.hash)
    ratio = _task(root, {"compression": "topk", "topk_ratio": 0.05})
    assert b'"exchange":{"compression":"topk","topk_ratio":0.05}' in canonical_task(ratio)
    hashes.add(ratio.hash)
    assert len(hashes) == 6
    assert _task(root, {"compression": "none", "topk_ratio": 0.01}).hash == plain.hash  # defaults stay out


@pytest.mark.parametrize(
    ("exchange", "swarm", "more", "message"),
    [
        ({"compression": "int8"}, {}, {}, 'needs swarm.send = "diff"'),
        ({"compression": "fp16"}, {"send": "weights"}, {}, 'needs swarm.send = "diff"'),
        ({"compression": "topk"}, {**DIFF, "merge": "median"}, {}, 'topk" needs merge = "fedavg"'),
        (
            {"compression": "zip"},
            DIFF,
            {},
            "exchange.compression must be one of none, fp16, bf16, int8, topk",
        ),
        ({"compression": "topk", "topk_ratio": 0.0}, DIFF, {}, r"topk_ratio must be in \(0, 1\]"),
        ({"compression": "topk", "topk_ratio": 1.5}, DIFF, {}, r"topk_ratio must be in \(0, 1\]"),
        ({"compression": "int8", "topk_ratio": 0.1}, DIFF, {}, 'only used by compression = "topk"'),
        ({"compression": "topk", "topk_ratio": "a"}, DIFF, {}, "topk_ratio must be float"),
        (
            {"compression": "int8"},
            DIFF,
            {"privacy": {"secure_aggregation": True}},
            "cannot run with privacy.secure_aggregation",
        ),
    ],
)
def test_combinations_that_cannot_compose_are_refused(
    root: Path, exchange: dict[str, object], swarm: dict[str, object], more: dict[str, object], message: str
) -> None:
    with pytest.raises(TaskError, match=message):
        parse_task({"task": TASK, "swarm": swarm, "exchange": exchange, **more}, root)


def test_int8_composes_with_a_robust_rule_and_site_dp(root: Path) -> None:
    task = _task(
        root,
        {"compression": "int8"},
        {**DIFF, "merge": "trimmed_mean"},
        privacy={"mechanism": "site", "noise_multiplier": 1.0},
    )
    assert task.exchange.compression == "int8"
