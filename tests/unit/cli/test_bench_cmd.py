"""`swarm bench`: the CLI writes its files with the agreed schema (never judged on speed), and the
round and learning summaries add up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmd.bench.round import CATEGORIES, _cycle, _entries
from swarmd.cli.bench_cmd import learning_goals, summarize_case
from swarmd.cli.swarm import app

PNG = b"\x89PNG\r\n\x1a\n"


def test_chain_quick_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["bench", "chain", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output

    doc = json.loads((out / "chain.json").read_text())
    assert doc["bench"] == "chain" and doc["quick"] is True and doc["schema"] == 1
    assert doc["command"].startswith("swarm bench")
    assert {"cores", "ram_gb", "gpu"} <= set(doc["machine"])
    assert {"torch", "monai", "pyzmq", "web3"} <= set(doc["versions"])
    assert doc["goals"] and all({"goal", "value", "limit", "met"} <= set(g) for g in doc["goals"])
    assert all(isinstance(g["met"], bool) for g in doc["goals"])
    sizes = doc["result"]["sizes"]
    assert set(sizes) == {"3", "8"}
    for size in sizes.values():
        for call in ("join", "admit", "commit", "elect", "finalize", "reelect"):
            stats = size["calls"][call]
            assert (
                stats["n"] >= 1 and 0 < stats["gas"]["min"] <= stats["gas"]["median"] <= stats["gas"]["max"]
            )
        assert size["round"]["transactions"] == size["members"] + 2

    md = (out / "chain.md").read_text()
    assert md.startswith("## chain") and "| call |" in md and "| goal |" in md
    assert doc["plots"] == ["chain_gas.png"]
    assert (out / "chain_gas.png").read_bytes().startswith(PNG)


def _log(spec: str) -> dict[tuple[int, str], tuple[float, float]]:
    """'t round phase, ...' -> the spans `_entries` builds from a daemon's log."""
    events = [(float(t), int(r), p) for t, r, p in (e.split() for e in spec.split(","))]
    return _entries(events)


def test_round_cycle_splits_exactly_into_training_and_overhead() -> None:
    # Two rounds of a 2-site swarm; site-a leads round 1, site-b commits last.
    a = (
        "0.0 0 sync, 0.1 0 train, 1.0 0 commit, 1.1 0 elect, 2.0 0 exchange, 2.5 0 merge, 2.8 0 finalize, "
        "3.0 0 disseminate, 3.1 1 sync, 3.2 1 train, 4.0 1 commit, 4.1 1 elect, 5.3 1 exchange, 5.9 1 merge, "
        "6.2 1 finalize, 6.4 1 disseminate, 6.5 2 done"
    )
    b = (
        "0.0 0 sync, 0.2 0 train, 1.7 0 commit, 1.8 0 elect, 2.1 0 exchange, 3.3 0 disseminate, 4.0 1 sync, "
        "4.1 1 train, 5.0 1 commit, 5.1 1 elect, 5.5 1 exchange, 6.7 1 disseminate, 7.0 2 done"
    )
    sites = {"site-a": _log(a), "site-b": _log(b)}
    c = _cycle(1, sites)
    assert c["leader"] == "site-a" and c["last_committer"] == "site-b"
    assert c["cycle_s"] == pytest.approx(6.4 - 3.0)
    assert c["train_s"] == pytest.approx(5.0 - 4.1)
    assert sum(c["categories"][k] for k in CATEGORIES) == pytest.approx(c["overhead_s"], abs=2e-3)
    assert c["overhead_s"] + c["train_s"] == pytest.approx(c["cycle_s"], abs=2e-3)
    assert c["categories"]["merge"] == pytest.approx(0.3)
    assert c["parts"]["finalize_wait"] == pytest.approx(0.3)  # site-b saw round 0 finalized at 3.3
    assert c["parts"]["exchange_wait"] == pytest.approx(0.2)  # site-b saw the election at 5.5


def _run(seed: int, swarm: float, central: float, local: list[float]) -> dict:
    return {
        "task": "classification",
        "alpha": 0.1,
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
