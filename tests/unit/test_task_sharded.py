"""`[exchange] topology = "sharded"`: accepted with the coordinate-wise rules, part of the task hash, and
refused, with the reason and the way out, with a rule or setting a shard owner cannot carry out."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.errors import TaskError
from swarmd.task import SHARD_LEAVES, canonical_task, parse_task

TASK = {"name": "demo", "bundle": "bundle"}
SHARDED = {"topology": "sharded"}


def test_sharded_topology_takes_the_coordinate_wise_rules_and_changes_the_hash(root: Path) -> None:
    leader = parse_task({"task": TASK}, root)
    for rule in ("fedavg", "median", "trimmed_mean"):
        task = parse_task({"task": TASK, "swarm": {"merge": rule}, "exchange": SHARDED}, root)
        assert task.exchange.topology == "sharded"
    sharded = parse_task({"task": TASK, "exchange": SHARDED}, root)
    assert b'"sharded"' in canonical_task(sharded) and sharded.hash != leader.hash


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"swarm": {"merge": "geomedian"}}, r"coordinate-wise merge .*'geomedian' weighs whole updates"),
        ({"swarm": {"merge": "krum", "min_peers": 5}}, r"coordinate-wise merge .*'krum'"),
        ({"swarm": {"norm_bound": 5.0}}, r"cannot check swarm.norm_bound"),
        ({"privacy": {"secure_aggregation": True}}, r"does not compose with privacy.secure_aggregation"),
        (
            {"swarm": {"send": "diff"}, "exchange": {"topology": "sharded", "compression": "int8"}},
            r'does not compose with exchange.compression = "int8"',
        ),
        ({"round": {"mode": "cyclic"}}, r'"cyclic" cannot run with exchange.topology = "sharded"'),
    ],
)
def test_sharded_topology_refuses_what_no_shard_owner_can_do(root: Path, tables, message) -> None:
    with pytest.raises(TaskError, match=message):
        parse_task({"task": TASK, "exchange": SHARDED, **tables}, root)


def test_the_leaf_count_is_the_tasks_and_left_out_of_the_hash_at_its_default(root: Path) -> None:
    default = parse_task({"task": TASK, "exchange": SHARDED}, root)
    assert default.exchange.leaves == SHARD_LEAVES == 64  # what every sharded round so far was cut into
    same = parse_task({"task": TASK, "exchange": {**SHARDED, "leaves": SHARD_LEAVES}}, root)
    assert same.hash == default.hash  # tasks written before the setting keep their hash
    fewer = parse_task({"task": TASK, "exchange": {**SHARDED, "leaves": 32}}, root)
    assert fewer.exchange.leaves == 32 and fewer.hash != default.hash
    assert b'"leaves":32' in canonical_task(fewer)


@pytest.mark.parametrize(
    ("exchange", "message"),
    [
        ({**SHARDED, "leaves": 0}, r"exchange.leaves must be a whole number from 1 to 256, got 0"),
        ({**SHARDED, "leaves": 257}, r"exchange.leaves must be a whole number from 1 to 256, got 257"),
        ({**SHARDED, "leaves": 32.0}, r"\[exchange\].leaves must be int"),
        ({"leaves": 32}, r'exchange.leaves is only used by topology = "sharded", not \'leader\''),
    ],
)
def test_a_leaf_count_out_of_range_or_without_the_sharded_topology_is_refused(
    root: Path, exchange, message
) -> None:
    with pytest.raises(TaskError, match=message):
        parse_task({"task": TASK, "exchange": exchange}, root)
