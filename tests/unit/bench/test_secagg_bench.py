"""`swarmd.bench.secagg` and `secagg_report` on recorded numbers (no swarm): the byte counters are read
from a real daemon `Metrics` exposition, masking time moves from training into overhead, repeated runs
pool, the ratios and the goals follow, and the report renders."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from typer.testing import CliRunner

from swarmd.bench.round import CATEGORIES, _cycle
from swarmd.bench.secagg import SECAGG_CATEGORIES, compare, pool, resplit, transport_bytes
from swarmd.bench.secagg_report import secagg_goals, secagg_report
from swarmd.cli.swarm import app
from swarmd.daemon.metrics import Metrics
from swarmd.daemon.store import RoundRecord


def test_transport_bytes_are_read_from_a_daemons_exposition() -> None:
    m = Metrics()
    assert transport_bytes(generate_latest(m.registry).decode()) == {"in": 0, "out": 0}
    m.transport_hook("out", 1_000_000)
    m.transport_hook("out", 234)
    m.transport_hook("in", 77)
    m.training_samples.inc(5)  # other counters are left alone
    assert transport_bytes(generate_latest(m.registry).decode()) == {"in": 77, "out": 1_000_234}


def _journals(train_seconds: float) -> dict[str, dict[int, RoundRecord]]:
    """Two sites, two rounds; site-b commits last in round 1: TRAIN from 4.1 to its commit at 5.0."""

    def journal(spec: str, trained: float) -> dict[int, RoundRecord]:
        entered: dict[int, dict[str, float]] = {}
        for t, r, phase in (e.split() for e in spec.split(",")):
            entered.setdefault(int(r), {})[phase] = float(t)
        return {r: RoundRecord(round=r, entered=e, train_seconds=trained) for r, e in entered.items()}

    a = (
        "0.0 0 sync, 0.1 0 train, 1.0 0 commit, 1.1 0 elect, 2.0 0 exchange, 2.5 0 merge, 2.8 0 finalize, "
        "3.0 0 disseminate, 3.1 1 sync, 3.2 1 train, 4.0 1 commit, 4.1 1 elect, 5.3 1 exchange, 5.9 1 merge, "
        "6.2 1 finalize, 6.4 1 disseminate"
    )
    b = (
        "0.0 0 sync, 0.2 0 train, 1.7 0 commit, 1.8 0 elect, 2.1 0 exchange, 3.3 0 disseminate, 4.0 1 sync, "
        "4.1 1 train, 5.0 1 commit, 5.1 1 elect, 5.5 1 exchange, 6.7 1 disseminate"
    )
    return {"site-a": journal(a, train_seconds), "site-b": journal(b, train_seconds)}


def _row(n: int, cycles: list[dict[str, Any]], *, out: int, chain: int, rss: float = 2.0) -> dict[str, Any]:
    """What `_run_size` returns with the probe's keys, for `cycles` (round 0 is the warm-up)."""
    return {
        "sites": n,
        "model": "densenet121",
        "model_bytes": 28_000_000,
        "rounds": len(cycles),
        "wall_s": 10.0,
        "cycles": cycles,
        "steady_rounds": [c["round"] for c in cycles[1:]],
        "cycle_s": 3.4,
        "leader_rss": [{"round": 1, "growth_bytes": int(rss * 28e6), "ratio": rss}],
        "leader_rss_ratio_max": rss,
        "transport_bytes": {"in": out, "out": out, "sites": {}},
        "chain_txs": {"commit": {"count": n * len(cycles), "bytes": chain * len(cycles)}},
    }


def test_masking_moves_from_training_into_overhead() -> None:
    cycles = [_cycle(r, _journals(train_seconds=0.6)) for r in (0, 1)]
    assert cycles[1]["train_s"] == pytest.approx(0.9) and cycles[1]["trainer_s"] == pytest.approx(0.6)
    row = resplit(_row(3, cycles, out=8_000_000, chain=1_000))
    c = row["cycles"][1]
    assert c["categories"]["mask"] == pytest.approx(0.3)
    assert c["train_s"] == pytest.approx(0.6)
    assert c["overhead_s"] == pytest.approx(cycles[1]["overhead_s"] + 0.3)
    assert c["overhead_s"] + c["train_s"] == pytest.approx(c["cycle_s"], abs=2e-3)
    assert sum(c["categories"][k] for k in SECAGG_CATEGORIES) == pytest.approx(c["overhead_s"], abs=3e-3)
    # The means are over round 1 only (round 0 is the warm-up); bytes per round over both rounds.
    assert row["overhead_s"] == c["overhead_s"] and row["categories"] == c["categories"]
    assert row["wire_bytes_per_round"] == 4_000_000 and row["chain_bytes_per_round"] == 1_000
    # A journal without the trainer's seconds (an older daemon): nothing moves.
    assert resplit(_row(3, [_cycle(r, _journals(0.0)) for r in (0, 1)], out=1, chain=1))["cycles"][1][
        "categories"
    ]["mask"] == pytest.approx(0.0)


def _cycles(overheads: list[float]) -> list[dict[str, Any]]:
    return [
        {
            "round": r,
            "cycle_s": o + 1.0,
            "train_s": 1.0,
            "trainer_s": 1.0,
            "overhead_s": o,
            "categories": {**dict.fromkeys(CATEGORIES, 0.0), "exchange": o},
        }
        for r, o in enumerate(overheads)
    ]


def test_repeated_runs_pool_their_steady_rounds() -> None:
    a = resplit(_row(8, _cycles([9.0, 1.0, 2.0]), out=300, chain=10, rss=2.5))
    b = resplit(_row(8, _cycles([9.0, 4.0, 5.0]), out=600, chain=30, rss=2.9))
    p = pool([a, b])
    assert p["runs"] == 2 and len(p["cycles"]) == 6
    assert p["overhead_s"] == pytest.approx(3.0)  # rounds 1 and 2 of both runs, never round 0
    assert p["categories"]["exchange"] == pytest.approx(3.0)
    assert p["wire_bytes_per_round"] == 150 and p["chain_bytes_per_round"] == 20
    assert p["leader_rss_ratio_max"] == 2.9
    assert pool([a]) is a


def _pair(n: int, *, bytes_ratio: float, overhead_ratio: float, rss: float = 2.5) -> dict[str, Any]:
    plain = resplit(_row(n, _cycles([5.0, 2.0, 2.0]), out=1_000_000, chain=1_000))
    secure = resplit(
        _row(n, _cycles([5.0, 2.0 * overhead_ratio, 2.0 * overhead_ratio]), out=0, chain=1_700, rss=rss)
    )
    secure["wire_bytes_per_round"] = round(plain["wire_bytes_per_round"] * bytes_ratio)
    return compare(plain, secure)


def test_compare_takes_the_ratios_of_one_size() -> None:
    p = _pair(5, bytes_ratio=1.01, overhead_ratio=1.25)
    assert p["sites"] == 5
    assert p["bytes_ratio"] == pytest.approx(1.01)
    assert p["extra_wire_bytes_per_round"] == 3_333
    assert p["extra_chain_bytes_per_round"] == 700
    assert p["bytes_with_chain_ratio"] == pytest.approx((336_667 + 1_700) / (333_333 + 1_000), abs=1e-4)
    assert p["overhead_ratio"] == pytest.approx(1.25)
    assert p["extra_overhead_s"]["exchange"] == pytest.approx(0.5)


def _result(pairs: list[dict[str, Any]], dropout: dict[str, Any] | None) -> dict[str, Any]:
    return {"cores": 2, "sizes": [p["sites"] for p in pairs], "rounds": 3, "repeats": 1, "pairs": pairs,
            "dropout": dropout}  # fmt: skip


DROPOUT = {
    "sites": 8,
    "kill": 2,
    "round": 1,
    "leader": "site-c",
    "holdout": "site-a",
    "killed": ["site-b", "site-d"],
    "committers": 8,
    "finalize_after_resume_s": 6.1,
    "included": [f"site-{c}" for c in "abcdefgh"],
    "killed_included": True,
    "recovered": [],
    "max_abs_error": 2e-6,
    "step": 4e-6,
    "error_over_step": 0.5,
}


def test_goals_judge_bytes_at_every_size_overhead_at_3_and_8_memory_and_the_dropout_sum() -> None:
    pairs = [
        _pair(3, bytes_ratio=1.0, overhead_ratio=1.4),
        _pair(5, bytes_ratio=1.25, overhead_ratio=3.0),  # overhead at N=5 is reported, not judged
        _pair(8, bytes_ratio=1.1, overhead_ratio=1.6, rss=3.2),
    ]
    goals = {g["goal"]: g["met"] for g in secagg_goals(_result(pairs, DROPOUT))}
    assert [k for k, met in goals.items() if not met] == [
        "bytes on the wire per round, secure / plain, N=5",
        "round overhead, secure / plain, N=8",
        "leader RSS growth / model size with secure aggregation, N=8 (max over rounds)",
    ]
    assert not any("overhead" in k and "N=5" in k for k in goals)
    assert len(goals) == 3 + 2 + 3 + 1
    wrong_sum = {**DROPOUT, "error_over_step": 1.7}
    assert not secagg_goals(_result(pairs[:1], wrong_sum))[-1]["met"]
    left_out = {**DROPOUT, "killed_included": False}
    assert not secagg_goals(_result(pairs[:1], left_out))[-1]["met"]
    assert len(secagg_goals(_result(pairs[:1], None))) == 3


def test_report_renders_tables_notes_and_the_plot(tmp_path: Path) -> None:
    result = _result([_pair(3, bytes_ratio=1.0002, overhead_ratio=1.2)], DROPOUT)
    report = secagg_report(result, tmp_path)
    assert report.name == "secagg" and report.plots[0].exists()
    assert "| 3 | secure / plain |" in report.tables and "site-b, site-d" in report.tables
    assert "mask" in report.tables and "N=3: secure aggregation adds" in report.notes[0]


def test_cycle_reports_the_trainers_own_seconds() -> None:
    journals = _journals(0.5)
    journals["site-b"][1] = replace(journals["site-b"][1], train_seconds=None)
    assert _cycle(1, journals)["trainer_s"] == pytest.approx(0.9)  # unknown: the whole TRAIN phase


@pytest.mark.parametrize("args", [["--rounds", "1"], ["--repeats", "0"], ["--sizes", "3,eight"]])
def test_the_command_refuses_bad_options_before_starting_a_swarm(tmp_path: Path, args: list[str]) -> None:
    res = CliRunner().invoke(app, ["bench", "secagg", *args, "--out", str(tmp_path)])
    assert res.exit_code != 0 and not list(tmp_path.iterdir())
