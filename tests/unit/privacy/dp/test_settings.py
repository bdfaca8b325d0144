"""`[privacy]` DP settings that task validation refuses before any plan is made."""

from __future__ import annotations

import pytest

from swarmd.errors import TaskError
from swarmd.task import parse_task
from swarmd.train import BUNDLES_DIR


def _parse(**privacy: object) -> None:
    parse_task({"task": {"name": "t", "bundle": "cxr_densenet"}, "privacy": privacy}, BUNDLES_DIR)


@pytest.mark.parametrize(
    ("privacy", "match"),
    [
        (dict(noise_multiplier=-0.5), "noise_multiplier must be >= 0"),
        (dict(noise_multiplier=1.0, delta=1.0), r"delta must be in \[0, 1\)"),
        (dict(target_epsilon=9.0, epsilon_budget=8.0), "exceeds privacy.epsilon_budget"),
        (dict(noise_multiplier=float("inf")), "noise_multiplier must be a finite number"),
        (dict(noise_multiplier=1.0, epsilon_budget=float("nan")), "epsilon_budget must be a finite"),
        (dict(noise_multiplier=1.0, target_epsilon=1.0), "exactly one of"),
    ],
)
def test_bad_dp_settings(privacy: dict[str, object], match: str) -> None:
    with pytest.raises(TaskError, match=match):
        _parse(mechanism="sample", **privacy)


def test_good_dp_settings() -> None:
    _parse(mechanism="site", noise_multiplier=1.0, epsilon_budget=8.0, accountant="prv")
    _parse(mechanism="none", noise_multiplier=float("inf"))  # unused when DP is off


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"swarm": {"merge": "median"}, "privacy": {"secure_aggregation": True}}, 'needs merge = "fedavg"'),
        ({"privacy": {"secure_aggregation": True, "neighbours": 1}}, "neighbours must be 0"),
        ({"privacy": {"clip_range": 0}}, "clip_range must be > 0"),
        ({"privacy": {"sample_bound": 1 << 25}}, "sample_bound must be in"),
        ({"privacy": {"secure_aggregation": "yes"}}, "secure_aggregation must be bool"),
        ({"privacy": {"mask": True}}, r"unknown key\(s\) mask"),
    ],
)
def test_bad_secure_aggregation_settings(settings: dict[str, dict[str, object]], match: str) -> None:
    with pytest.raises(TaskError, match=match):
        parse_task({"task": {"name": "t", "bundle": "cxr_densenet"}, **settings}, BUNDLES_DIR)


def test_privacy_settings_are_part_of_the_task_hash() -> None:
    def task_hash(**privacy: object) -> bytes:
        return parse_task(
            {"task": {"name": "t", "bundle": "cxr_densenet"}, "privacy": privacy}, BUNDLES_DIR
        ).hash

    plain = task_hash()
    assert task_hash(secure_aggregation=True) != plain
    assert task_hash(mechanism="site", noise_multiplier=1.0, delta=1e-5) != task_hash(
        mechanism="site", noise_multiplier=1.0, delta=1e-6
    )
