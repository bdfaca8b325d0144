"""The chain bench runs end to end and the contract meets its gas goals at 8 members."""

from __future__ import annotations

import pytest

from swarmd.bench.chain import GOALS, run_chain_bench

pytestmark = pytest.mark.chain


def test_gas_goals_at_eight_members() -> None:
    report = run_chain_bench(members=8, quick=True)
    assert set(report["sizes"]) == {"3", "8"}
    eight = report["sizes"]["8"]
    assert {"join", "admit", "commit", "reveal", "elect", "finalize", "reelect"} <= set(eight["calls"])
    for name, limit in GOALS.items():
        assert eight["calls"][name]["gas"]["max"] <= limit, (name, eight["calls"][name]["gas"])
    assert all(goal["met"] for goal in report["goals"].values())
    # Two transactions per site per round (commit, reveal) plus elect and finalize.
    assert eight["round"]["transactions"] == 18
    assert eight["calls"]["commit"]["n"] == 8 * report["rounds_per_size"]
    # The client's CPU is measured for every call: signing alone takes more than nothing.
    assert all(c["client_cpu_ms"] > 0 for c in eight["calls"].values())
