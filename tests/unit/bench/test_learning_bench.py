"""`swarmd.bench.learning`: the seed summary adds up, the goals are judged, and the report is written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from swarmd.bench.learning import QUICK_NOTE, learning_goals, learning_report, learning_steps, summarize_case


def _run(seed: int, swarm: float, central: float, local: list[float], alpha: float = 0.1) -> dict[str, Any]:
    return {
        "task": "classification",
        "alpha": alpha,
        "seed": seed,
        "rounds": 2,
        "local_steps": 3,
        "site_labels": [[30, 0], [15, 15], [5, 25]],
        "swarm": {
            "metrics": {"auc": swarm},
            "curve": [{"round": 1, "auc": swarm - 0.1}, {"round": 2, "auc": swarm}],
        },
        "centralized": {"metrics": {"auc": central}},
        "local_only": [{"site": f"site-{i + 1}", "metrics": {"auc": v}} for i, v in enumerate(local)],
    }


def test_learning_summary_means_and_goals() -> None:
    case = summarize_case([_run(0, 0.90, 0.91, [0.5, 0.8, 0.7]), _run(1, 0.80, 0.81, [0.6, 0.85, 0.7])])
    assert case["metric"] == "auc"
    assert case["swarm"][0] == pytest.approx(0.85) and case["swarm"][1] == pytest.approx(math.sqrt(0.005))
    assert case["best_local"][0] == pytest.approx(0.825)
    assert case["skewed_site_gain"][0] == pytest.approx((0.4 + 0.2) / 2)  # site-1 holds one class only
    assert case["curve_mean"] == pytest.approx([0.75, 0.85])
    verdicts = [g["met"] for g in learning_goals([case])]
    assert verdicts == [True, True, True]


def test_report_keeps_the_raw_runs_and_summarises_each_case(tmp_path: Path) -> None:
    runs = [_run(0, 0.9, 0.91, [0.5, 0.8, 0.7]), _run(0, 0.7, 0.95, [0.5, 0.8, 0.7], alpha=1.0)]
    report = learning_report(runs, tmp_path, quick=True)
    assert json.loads((tmp_path / "learning_runs.json").read_text()) == runs
    assert [(c["task"], c["alpha"]) for c in report.result["cases"]] == [
        ("classification", 0.1),
        ("classification", 1.0),
    ]
    assert report.result["runs"] == runs and len(report.goals) == 6
    assert report.notes[0] == QUICK_NOTE and len(report.notes) == 3
    assert report.tables.splitlines()[0].endswith(
        "| site-3 alone | swarm - best site | most skewed site: TV, swarm gain |"
    )
    assert [p.name for p in report.plots] == ["learning_final.png", "learning_rounds.png"]


def test_steps_are_one_per_case_and_seed() -> None:
    assert [label for label, _ in learning_steps(quick=True)] == ["classification alpha=0.1 seed 0"]
    labels = [label for label, _ in learning_steps(seeds=2, task="segmentation")]
    assert labels == [
        "segmentation alpha=0.1 seed 0",
        "segmentation alpha=0.1 seed 1",
        "segmentation alpha=1.0 seed 0",
        "segmentation alpha=1.0 seed 1",
    ]
