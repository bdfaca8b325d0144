"""`swarmd.bench.attack`: its goals and tables follow from a result (a made-up one here: no processes),
the flood is 10,000 frames of every kind, and ping figures count a missed ping as its timeout."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from swarmd.bench.attack import (
    FLOOD_FRAMES,
    PING_TIMEOUT,
    _pings,
    attack_goals,
    attack_report,
    flood_frames,
    format_tables,
)

CATS = {"chain": 0.1, "exchange": 0.4, "merge": 0.1, "dissemination": 0.3, "waiting": 0.1}


def _round(r: int, kind: str, cycle: float, included: int = 3) -> dict[str, Any]:
    row: dict[str, Any] = {
        "round": r,
        "kind": kind,
        "leader": "site-b",
        "term": 1,
        "committers": ["site-a", "site-b", "site-c"],
        "included": ["site-a", "site-b", "site-c"][:included],
        "honest_included": included,
        "honest_committers": 3,
        "cycle_s": cycle,
        "train_s": 1.0,
        "overhead_s": cycle - 1.0,
        "categories": CATS,
    }
    if kind == "flooded":
        row["flood"] = {
            "frames": 10_000,
            "mib": 42.5,
            "send_s": 0.8,
            "after_election_s": 0.03,
            "ended_before_finalize": True,
            "rejected": {"rate": 9000, "bad_message": 120},
        }
    return row


def _vector(name: str, hwm: float | None, sampled: float, max_ms: float, missed: int = 0) -> dict[str, Any]:
    return {
        "vector": name,
        "sent": 12,
        "hwm_growth_mib": hwm,
        "sampled_growth_mib": sampled,
        "pings": 40,
        "missed": missed,
        "median_ms": 1.2,
        "p99_ms": max_ms,
        "max_ms": max_ms,
    }


def _result() -> dict[str, Any]:
    rounds = [
        _round(0, "warm-up", 4.0),
        _round(1, "clean", 2.0),
        _round(2, "clean", 2.2),
        _round(3, "flooded", 2.5),
        _round(4, "flooded", 2.9),
    ]
    return {
        "bench": "attack",
        "cores": 2,
        "sites": 4,
        "attacker": "site-d",
        "flood_frames": 10_000,
        "clean_rounds": [1, 2],
        "flooded_rounds": [3, 4],
        "rounds": rounds,
        "clean_cycle_s": 2.1,
        "flooded_cycle_s": 2.7,
        "worst_flooded_cycle_s": 2.9,
        "ratio_worst": round(2.9 / 2.1, 3),
        "ratio_mean": round(2.7 / 2.1, 3),
        "floods_missed": [],
        "attacker_error": None,
        "rounds_wall_s": 60.0,
        "stranger": {
            "site": "site-a",
            "bulk_port_found": True,
            "metrics_port": 9102,
            "seconds_per_vector": 1.0,
            "frame_bytes": 16 << 20,
            "peak_reset": True,
            "baseline": {"pings": 50, "missed": 0, "median_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.5},
            "attack": {"pings": 280, "missed": 0, "median_ms": 1.3, "p99_ms": 9.0, "max_ms": 21.0},
            "vectors": [
                _vector("control: raw TCP, 16 MiB of random bytes", 0.5, 0.4, 21.0),
                _vector("bulk: ZeroMQ, no login", 0.1, 0.0, 3.0),
            ],
            "parallel": _vector("control: raw ZMTP, 8 connections at once", 90.0, 88.0, 30.0),
            "phase_hwm_growth_mib": 0.8,
            "phase_sampled_growth_mib": 0.6,
            "rss_mib": 900.0,
        },
        "alive_after": ["site-a", "site-b", "site-c"],
    }


def _goals(result: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    return {g["goal"].split(":")[0]: (g["value"], g["met"]) for g in attack_goals(result)}


def test_every_goal_is_met_by_a_good_result() -> None:
    goals = attack_goals(_result())
    assert [g["met"] for g in goals] == [True] * 4
    by = {g["goal"]: g for g in goals}
    flood = next(g for name, g in by.items() if name.startswith("member flood"))
    assert flood["value"] == pytest.approx(1.381) and flood["limit"] == 1.5
    assert "mean flooded / mean clean 1.286" in flood["note"]
    rss = next(g for name, g in by.items() if "RSS" in name)
    assert rss["value"] == 0.8  # the largest of every per-vector and whole-phase figure, not `parallel`
    ping = next(g for name, g in by.items() if "ping delay" in name)
    assert ping["value"] == pytest.approx(20.0)  # 21 ms worst under attack - 1 ms median at rest


def test_each_failure_misses_its_goal() -> None:
    slow = _result()
    slow["ratio_worst"] = 1.6
    assert _goals(slow)["member flood of 10,000 malformed frames"] == (1.6, False)

    missed = _result()
    missed["floods_missed"] = [4]
    assert _goals(missed)["member flood of 10,000 malformed frames"][1] is False

    excluded = _result()
    excluded["rounds"][4] = _round(4, "flooded", 2.9, included=2)
    value, met = _goals(excluded)["honest committers included in every flooded round (%)"]
    assert value == pytest.approx(66.7) and not met

    fat = _result()
    fat["stranger"]["vectors"][1]["sampled_growth_mib"] = 40.0
    assert _goals(fat)["stranger's 16 MiB frames to every port"] == (40.0, False)

    stalled = _result()
    stalled["stranger"]["attack"].update(missed=1, max_ms=PING_TIMEOUT * 1000)
    value, met = _goals(stalled)["stranger's 16 MiB frames"]
    assert value == pytest.approx(999.0) and not met

    unreset = copy.deepcopy(_result())
    unreset["stranger"].update(peak_reset=False, phase_hwm_growth_mib=None)
    for v in unreset["stranger"]["vectors"]:
        v["hwm_growth_mib"] = None
    goals = attack_goals(unreset)
    assert goals[2]["value"] == 0.6 and goals[2]["note"] == "sampled every 5 ms only"


def test_tables_show_every_round_and_vector() -> None:
    result = _result()
    result["stranger"]["bulk_port_found"] = False
    md = format_tables(result)
    assert md.count("| flooded |") == 2 and md.count("| clean |") == 2 and "| warm-up |" in md
    assert "10,000 frames (42.5 MiB) in 0.80 s; rejected: bad_message 120, rate 9000" in md
    assert "| control: raw TCP, 16 MiB of random bytes | 12 | 0.5 | 0.4 | 40 | 0 | 21.0 | 21.0 |" in md
    assert "rounds 1-2 are clean, rounds 3-4 flooded" in md
    assert "bulk port was not found" in md
    assert "Beyond the goal (one frame): control: raw ZMTP, 8 connections at once, 12 connections" in md
    assert "peak RSS growth 90.0 MiB (sampled 88.0)" in md
    report = attack_report(_result())
    assert report.name == "attack" and report.plots == [] and len(report.goals) == 4
    assert "never commits" in report.notes[0]


def test_the_flood_holds_every_kind_and_pings_count_misses_as_the_timeout() -> None:
    frames = flood_frames(3, 1, 3)
    assert len(frames) == FLOOD_FRAMES
    assert sum(1 for f in frames if len(f) > 8 << 10) == FLOOD_FRAMES // 25  # the expensive ones
    offer = msgpack.unpackb(frames[50])  # every 25th frame: the four expensive kinds in turn
    assert offer["kind"] == "update" and offer["round"] == 3 and offer["term"] == 1
    samples = [(float(t), 0.002) for t in range(99)] + [(99.0, None)]
    got = _pings(samples, 0.0, 100.0)
    assert got["pings"] == 100 and got["missed"] == 1
    assert got["max_ms"] == PING_TIMEOUT * 1000 and got["median_ms"] == 2.0
    assert _pings(samples, 200.0, 300.0)["pings"] == 0
