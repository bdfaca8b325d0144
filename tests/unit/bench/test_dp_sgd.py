"""The DP-SGD bench judges its 2.5x goal per bundle and renders one row each (measuring runs in the bench)."""

from __future__ import annotations

from swarmd.bench.dp_sgd import dp_sgd_report


def _row(bundle: str, ratio: float) -> dict[str, object]:
    return {
        "bundle": bundle,
        "batch": 8,
        "n_train": 39,
        "steps": 10,
        "rounds": 5,
        "plain_cpu_ms": 100.0,
        "private_cpu_ms": 100.0 * ratio,
        "plain_wall_ms": 110.0,
        "private_wall_ms": 110.0 * ratio,
        "ratio": ratio,
    }


def test_goals_and_table() -> None:
    report = dp_sgd_report({"bench": "dp_sgd", "results": [_row("a", 2.2), _row("b", 2.7)]})
    assert [g["met"] for g in report.goals] == [True, False]
    assert "| a | 8 | 39 | 10 x 5 | 100 | 220 | 2.20 |" in report.tables
