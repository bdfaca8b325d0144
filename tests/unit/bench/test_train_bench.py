"""`swarmd.bench.train`: the throughput table it renders, from a made-up result."""

from __future__ import annotations

from swarmd.bench.train import train_report, train_steps


def test_report_has_one_row_per_bundle_and_device_and_no_goals() -> None:
    row = {
        "bundle": "cxr_densenet",
        "device": "cpu",
        "amp": False,
        "threads": 2,
        "params": 6_960_000,
        "model_mb": 27.2,
        "steps_per_round": 5,
        "step_ms": 512.3,
        "images_per_s": 12.34,
        "voxels_per_s": 3.2e6,
        "snapshot_ms": 4.56,
        "init_s": 2.1,
    }
    report = train_report({"results": [row, dict(row, device="cuda", amp=True)]})
    assert report.name == "train" and report.goals == [] and report.plots == []
    lines = report.tables.splitlines()
    assert lines[0].startswith("| bundle | device | AMP | threads | params |") and len(lines) == 4
    assert lines[2] == "| cxr_densenet | cpu | False | 2 | 6.96M | 27.2 | 5 | 512 | 12.3 | 3.20 | 4.6 | 2.1 |"


def test_one_step_runs_both_bundles() -> None:
    assert [label for label, _ in train_steps(quick=True)] == ["both example bundles"]
