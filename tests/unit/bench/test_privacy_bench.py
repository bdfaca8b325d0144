"""`swarmd.bench.privacy`: arms, summary, goals and report on recorded numbers; the in-process secure
aggregation of `private_swarm` on small tensors (the measuring runs are in the bench)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from swarmd.bench.learning import bench_task
from swarmd.bench.privacy import (
    PLAIN,
    SECAGG,
    arm_names,
    arm_privacy,
    privacy_goals,
    privacy_report,
    privacy_steps,
    summarize_task,
)
from swarmd.bench.private_swarm import SwarmPrivacy, has_privacy
from swarmd.errors import UsageError
from swarmd.merge import FedAvg, Update
from swarmd.task import DPMechanism, PrivacySettings


def _run(arm: str, seed: int, auc: float, eps: float = 0.0, committed: int = 3) -> dict[str, Any]:
    dp = arm.startswith("epsilon")
    point = {"epsilon": {f"site-{i}": eps for i in (1, 2, 3)}, "committed": committed}
    plan = {"noise_multiplier": 1.5, "sample_rate": 0.2} if dp else None
    return {
        "arm": arm,
        "task": "classification",
        "alpha": 1.0,
        "seed": seed,
        "sites": 3,
        "rounds": 2,
        "local_steps": 3,
        "privacy": {"target_epsilon": float(arm.split()[-1]) if dp else 0.0},
        "metrics": {"auc": auc, "loss": 0.3},
        "curve": [{"round": 1, "auc": auc, "privacy": point}, {"round": 2, "auc": auc, "privacy": point}],
        "seconds": 10.0,
        "plans": [plan] * 3,
        "unmask_error": [1e-6, 2e-6] if arm == SECAGG else [],
    }


RUNS = [
    _run(PLAIN, 0, 0.90),
    _run(SECAGG, 0, 0.902),
    _run("epsilon 1", 0, 0.55, eps=0.99, committed=2),
    _run(PLAIN, 1, 0.80),
    _run(SECAGG, 1, 0.80),
    _run("epsilon 1", 1, 0.65, eps=0.98),
]


def test_arms_set_the_privacy_table() -> None:
    assert arm_names((1.0, 8.0)) == [PLAIN, SECAGG, "epsilon 1", "epsilon 8"]
    assert arm_privacy(PLAIN) == PrivacySettings()
    assert arm_privacy(SECAGG).secure_aggregation and arm_privacy(SECAGG).mechanism is DPMechanism.NONE
    dp = arm_privacy("epsilon 3")
    assert (dp.mechanism, dp.target_epsilon, dp.epsilon_budget, dp.delta) == (
        DPMechanism.SAMPLE,
        3.0,
        3.0,
        1e-5,
    )
    assert not dp.secure_aggregation


def test_summary_pairs_each_arm_with_plain_by_seed() -> None:
    case = summarize_task(RUNS)
    assert case["metric"] == "auc" and list(case["arms"]) == [PLAIN, SECAGG, "epsilon 1"]
    dp = case["arms"]["epsilon 1"]
    assert dp["metric"][0] == pytest.approx(0.60)
    assert dp["minus_plain"][0] == pytest.approx(((0.55 - 0.90) + (0.65 - 0.80)) / 2)
    assert (dp["epsilon"], dp["sigma"], dp["target_epsilon"], dp["short_rounds"]) == (0.99, 1.5, 1.0, 2)
    assert case["secagg_abs_diff"] == pytest.approx([0.002, 0.0])
    assert case["arms"][SECAGG]["unmask_error"] == 2e-6 and case["arms"][PLAIN]["unmask_error"] is None


def test_secagg_goal_is_judged_on_the_worst_seed() -> None:
    (met,) = privacy_goals([summarize_task(RUNS)])
    assert met["met"] and met["value"] == pytest.approx(0.002)
    worse = [*RUNS[:1], _run(SECAGG, 0, 0.91)]
    (missed,) = privacy_goals([summarize_task(worse)])
    assert not missed["met"] and missed["value"] == pytest.approx(0.01)


def test_report_writes_runs_table_plot_and_the_timing_goals(tmp_path: Path) -> None:
    timing = {
        "bench": "dp_sgd",
        "results": [
            {
                "bundle": "cxr_densenet",
                "batch": 8,
                "n_train": 39,
                "steps": 10,
                "rounds": 5,
                "plain_cpu_ms": 300.0,
                "private_cpu_ms": 690.0,
                "plain_wall_ms": 310.0,
                "private_wall_ms": 700.0,
                "ratio": 2.3,
            }
        ],
    }
    report = privacy_report([*RUNS, timing], tmp_path, quick=False)
    assert json.loads((tmp_path / "privacy_runs.json").read_text()) == json.loads(json.dumps(RUNS))
    assert [g["met"] for g in report.goals] == [True, True]
    assert "| classification | auc | epsilon 1 | 2 | 1.5 | 0.2 | 0.990 | 0.600 ± 0.071 |" in report.tables
    assert "| cxr_densenet | 8 | 39 | 10 x 5 | 300 | 690 | 2.30 |" in report.tables
    assert [p.name for p in report.plots] == ["privacy_epsilon.png"] and report.plots[0].stat().st_size > 0
    no_timing = privacy_report(RUNS, tmp_path, quick=True)
    assert len(no_timing.goals) == 1 and "DP-SGD vs plain" not in no_timing.tables


def test_steps_cover_every_task_seed_and_arm_then_the_timing() -> None:
    labels = [label for label, _ in privacy_steps(seeds=2, epsilons=(1.0, 3.0))]
    assert len(labels) == 2 * 2 * 4 + 1 and labels[-1] == "DP-SGD time per step"
    assert labels[0] == f"classification seed 0: {PLAIN}" and labels[-2] == "segmentation seed 1: epsilon 3"
    quick = [label for label, _ in privacy_steps(quick=True, timing=False)]
    assert quick == [f"classification seed 0: {a}" for a in arm_names((1.0, 8.0))]
    for bad in ({"task": "x"}, {"seeds": 0}, {"epsilons": (0.0,)}, {"epsilons": ()}):
        with pytest.raises(UsageError):
            privacy_steps(**bad)  # type: ignore[arg-type]


class _Site:
    """Stands in for a BundleTrainer where SwarmPrivacy reads it (the DP plan's data size)."""

    n_train, batch_size = 40, 8


def test_secure_merge_is_fedavg_of_the_same_updates(tmp_path: Path) -> None:
    task = bench_task("classification", 2, 1, PrivacySettings(secure_aggregation=True))
    assert has_privacy(task) and not has_privacy(replace(task, privacy=PrivacySettings()))
    names = ["site-1", "site-2", "site-3"]
    privacy = SwarmPrivacy(task, [_Site()] * 3, names, tmp_path)  # type: ignore[list-item]
    assert privacy.active() == [0, 1, 2] and privacy.plans() == [None] * 3
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.zeros(5, 7), "steps": torch.tensor(4)}
    updates = [
        Update(n, {"w": torch.randn(5, 7, generator=gen), "steps": torch.tensor(9)}, 10 * (i + 1))
        for i, n in enumerate(names)
    ]
    clear = FedAvg()
    clear.begin(base)
    for u in updates:
        clear.add(u)
    want = clear.result()
    for r in (0, 1):  # fresh keys, shares and vault records each round
        merged = privacy.merge(r, base, updates)
        assert torch.allclose(merged["w"], want["w"], atol=1e-4)
        assert int(merged["steps"]) == 4  # not masked: stays the base's
    assert len(privacy.unmask_error) == 2 and max(privacy.unmask_error) < 1e-4
    assert privacy.spent(1, [0, 1, 2]) == {"epsilon": dict.fromkeys(names, 0.0), "committed": 3}


def test_cli_refuses_bad_epsilons_and_tasks_before_running(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from swarmd.cli.swarm import app

    for args, says in (
        (["--epsilons", "1,x"], "comma-separated numbers"),
        (["--task", "x"], "--task must be"),
    ):
        res = CliRunner().invoke(app, ["bench", "privacy", *args, "--out", str(tmp_path / "out")])
        assert res.exit_code != 0 and says in res.output
    assert not (tmp_path / "out").exists()
