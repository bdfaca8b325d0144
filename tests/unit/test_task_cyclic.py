"""`[round] mode = "cyclic"`: hashed with its handoff timeout, composed with what works on a model that
visits the sites in turn (FedProx, FedBN's local layers, DP-SGD, site-level DP), and refused at task
validation, with the reason, where nothing is merged or summed."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.errors import TaskError
from swarmd.task import Task, canonical_task, parse_task


def _parse(
    root: Path,
    round_: dict[str, object],
    swarm: dict[str, object] | None = None,
    privacy: dict[str, object] | None = None,
) -> Task:
    data: dict[str, object] = {"task": {"name": "demo", "bundle": "bundle"}, "round": round_}
    data |= {"swarm": swarm or {}, "privacy": privacy or {}}
    return parse_task(data, root)


def test_cyclic_is_a_round_mode_and_is_hashed_with_its_timeout(root: Path) -> None:
    swarm = _parse(root, {})
    cyclic = _parse(root, {"mode": "cyclic"})
    assert cyclic.round.mode == "cyclic" and cyclic.round.handoff_timeout == 15.0
    assert b'"round":{"mode":"cyclic"}' in canonical_task(cyclic)  # keys at their defaults stay out
    quicker = _parse(root, {"mode": "cyclic", "handoff_timeout": 4})
    assert len({swarm.hash, cyclic.hash, quicker.hash}) == 3


@pytest.mark.parametrize(
    "swarm,privacy",
    [
        ({"prox_mu": 0.01}, None),
        ({"local_layers": "batchnorm"}, None),
        (None, {"mechanism": "site", "noise_multiplier": 1.0}),
        (None, {"mechanism": "sample", "noise_multiplier": 1.0}),
    ],
)
def test_what_composes_with_cyclic_rounds(root: Path, swarm: dict | None, privacy: dict | None) -> None:
    assert _parse(root, {"mode": "cyclic"}, swarm, privacy).round.mode == "cyclic"


@pytest.mark.parametrize(
    "swarm,privacy,match",
    [
        (None, {"secure_aggregation": True}, "privacy.secure_aggregation: there is no sum to hide"),
        ({"merge": "median"}, None, "swarm.merge = 'median': nothing is merged"),
        ({"merge": "krum", "min_peers": 5}, None, "swarm.merge = 'krum': nothing is merged"),
        ({"scaffold": True}, None, "swarm.scaffold: its server control variate is a mean"),
        ({"send": "diff"}, None, 'swarm.send = "diff": the model itself travels'),
        ({"norm_bound": 5.0}, None, "swarm.norm_bound: it bounds a site's step"),
    ],
)
def test_what_cannot_compose_is_refused_with_the_reason(
    root: Path, swarm: dict | None, privacy: dict | None, match: str
) -> None:
    with pytest.raises(
        TaskError, match=r'round.mode = "cyclic" cannot run with ' + match.replace("(", r"\(")
    ):
        _parse(root, {"mode": "cyclic"}, swarm, privacy)
    assert _parse(root, {}, swarm, privacy).round.mode == "swarm"  # the same settings run in a swarm round


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan")])
def test_a_handoff_timeout_must_be_a_positive_number_of_seconds(root: Path, timeout: float) -> None:
    with pytest.raises(TaskError, match=r"round\.handoff_timeout must be > 0 seconds"):
        _parse(root, {"mode": "cyclic", "handoff_timeout": timeout})
