"""`[swarm] prox_mu`, `[swarm] scaffold` and `[swarm] batchnorm_stats`: typed, validated, hashed only when
set (older tasks keep their hash), and the combinations that cannot compose refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.errors import TaskError
from swarmd.task import Task, canonical_task, parse_task


def _parse(root: Path, swarm: dict[str, object], privacy: dict[str, object] | None = None) -> Task:
    data: dict[str, object] = {"task": {"name": "demo", "bundle": "bundle"}, "swarm": swarm}
    if privacy is not None:
        data["privacy"] = privacy
    return parse_task(data, root)


def test_off_by_default_and_left_out_of_the_hash(root: Path) -> None:
    plain = _parse(root, {})
    assert plain.swarm.prox_mu == 0.0 and plain.swarm.scaffold is False
    doc = canonical_task(plain)
    assert b"prox_mu" not in doc and b"scaffold" not in doc  # tasks written before them keep their hash
    assert _parse(root, {"prox_mu": 0.0, "scaffold": False}).hash == plain.hash
    prox = _parse(root, {"prox_mu": 0.01})
    assert b'"prox_mu":0.01' in canonical_task(prox) and prox.hash != plain.hash
    scaffold = _parse(root, {"scaffold": True})
    assert b'"scaffold":true' in canonical_task(scaffold) and scaffold.hash not in (plain.hash, prox.hash)
    assert _parse(root, {"prox_mu": 1}).swarm.prox_mu == 1.0  # a TOML integer is a float setting too


def test_scaffold_variate_defaults_to_the_gradient_and_is_hashed_only_off_it(root: Path) -> None:
    scaffold = _parse(root, {"scaffold": True})
    assert scaffold.swarm.scaffold_variate == "gradient"
    assert b"scaffold_variate" not in canonical_task(scaffold)
    assert _parse(root, {"scaffold": True, "scaffold_variate": "gradient"}).hash == scaffold.hash
    option2 = _parse(root, {"scaffold": True, "scaffold_variate": "difference"})
    assert b'"scaffold_variate":"difference"' in canonical_task(option2) and option2.hash != scaffold.hash


def test_batchnorm_stats_defaults_to_the_batch_and_is_hashed_only_off_it(root: Path) -> None:
    plain = _parse(root, {})
    assert plain.swarm.batchnorm_stats == "batch" and b"batchnorm_stats" not in canonical_task(plain)
    assert _parse(root, {"batchnorm_stats": "batch"}).hash == plain.hash
    merged = _parse(root, {"batchnorm_stats": "merged"})
    assert b'"batchnorm_stats":"merged"' in canonical_task(merged) and merged.hash != plain.hash


@pytest.mark.parametrize(
    "swarm,privacy,match",
    [
        ({"prox_mu": -0.1}, None, "prox_mu must be >= 0"),
        ({"prox_mu": float("nan")}, None, "prox_mu must be >= 0"),
        ({"prox_mu": "0.1"}, None, r"prox_mu must be float"),
        ({"scaffold": 1}, None, "scaffold must be bool"),
        ({"scaffold": True, "merge": "median"}, None, 'scaffold needs merge = "fedavg"'),
        ({"scaffold": True, "scaffold_variate": "adam"}, None, "scaffold_variate must be one of gradient"),
        ({"scaffold_variate": "difference"}, None, "scaffold_variate is set but swarm.scaffold is false"),
        ({"scaffold": True, "local_layers": "batchnorm"}, None, "cannot run with swarm.local_layers"),
        ({"scaffold": True}, {"secure_aggregation": True}, "cannot run with privacy.secure_aggregation"),
        (
            {"scaffold": True},
            {"mechanism": "site", "noise_multiplier": 1.0},
            "cannot run with differential privacy",
        ),
        ({"scaffold": True}, {"mechanism": "sample", "noise_multiplier": 1.0}, "Opacus"),
        ({"prox_mu": 0.1}, {"mechanism": "sample", "noise_multiplier": 1.0}, "prox_mu > 0 cannot run"),
        ({"batchnorm_stats": "global"}, None, "batchnorm_stats must be one of batch, merged"),
        ({"batchnorm_stats": "merged", "local_layers": "batchnorm"}, None, "FedBN keeps normalisation"),
        (
            {"batchnorm_stats": "merged"},
            {"mechanism": "site", "noise_multiplier": 1.0},
            'batchnorm_stats = "merged" cannot run with privacy.mechanism = "site"',
        ),
    ],
)
def test_bad_settings_are_refused_with_the_reason(root: Path, swarm, privacy, match) -> None:
    with pytest.raises(TaskError, match=match):
        _parse(root, swarm, privacy)


def test_what_composes_is_accepted(root: Path) -> None:
    _parse(root, {"prox_mu": 0.1}, {"mechanism": "site", "noise_multiplier": 1.0})  # clipped after training
    _parse(root, {"prox_mu": 0.1}, {"secure_aggregation": True})
    _parse(root, {"prox_mu": 0.1, "merge": "krum", "min_peers": 5})
    _parse(root, {"prox_mu": 0.1, "scaffold": True, "send": "diff"})
    _parse(root, {"batchnorm_stats": "merged", "scaffold": True, "merge": "fedavg"})
    _parse(root, {"batchnorm_stats": "merged"}, {"secure_aggregation": True})  # statistics sum like weights
