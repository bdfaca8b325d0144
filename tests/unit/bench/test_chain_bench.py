"""`swarmd.bench.chain`: the goals it judges and the tables and plot it renders, from a made-up result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmd.bench.chain import chain_goals, chain_report, chain_steps

CALLS = ("join", "admit", "commit", "reveal", "elect", "finalize", "reelect")


def _result(commit_max: int = 79_605) -> dict[str, Any]:
    def size(n: int) -> dict[str, Any]:
        stats = {
            "n": 3,
            "gas": {"min": 1_000, "median": 2_000, "max": 3_000},
            "latency_ms": {"median": 1.5, "max": 2.25},
            "client_cpu_ms": 0.75,
        }
        return {
            "members": n,
            "deploy_ms": 12.5,
            "calls": {c: stats for c in CALLS},
            "round": {
                "transactions": 2 * n + 2,
                "gas": 123_456,
                "gas_per_site": 4_321,
                "blocks_quorum_to_election": 1,
            },
        }

    return {
        "goals_at_members": 8,
        "goals": {"commit": {"limit": 80_000, "max_gas": commit_max, "met": commit_max <= 80_000}},
        "sizes": {"3": size(3), "8": size(8)},
    }


def test_goals_hold_gas_and_transactions_at_the_larger_size() -> None:
    goals = chain_goals(_result(commit_max=80_001))
    assert [(g["goal"], g["value"], g["limit"], g["met"]) for g in goals] == [
        ("commit gas at 8 members (max)", 80_001, 80_000, False),
        ("transactions per round (two per site + two)", 18, 18, True),
    ]


def test_report_has_a_table_per_size_and_the_gas_plot(tmp_path: Path) -> None:
    report = chain_report(_result(), tmp_path)
    assert report.name == "chain" and [p.name for p in report.plots] == ["chain_gas.png"]
    assert (tmp_path / "chain_gas.png").exists()
    assert report.tables.count("| call | n | gas min |") == 2
    assert "**8 members**, deploy 12.5 ms. Per round: 18 transactions, 123,456 gas" in report.tables
    assert "| reelect | 3 | 1,000 | 2,000 | 3,000 | 1.5 | 2.25 | 0.75 |" in report.tables


def test_one_step_covers_both_sizes() -> None:
    assert [label for label, _ in chain_steps(5, quick=True)] == ["3 and 5 members"]
