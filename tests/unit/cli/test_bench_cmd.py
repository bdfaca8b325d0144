"""`swarm bench`: the CLI runs a bench and writes its files with the agreed schema (never judged on speed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

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
        for call in ("join", "admit", "commit", "reveal", "elect", "finalize", "reelect"):
            stats = size["calls"][call]
            assert (
                stats["n"] >= 1 and 0 < stats["gas"]["min"] <= stats["gas"]["median"] <= stats["gas"]["max"]
            )
        assert size["round"]["transactions"] == 2 * size["members"] + 2  # commit and reveal per site

    md = (out / "chain.md").read_text()
    assert md.startswith("## chain") and "| call |" in md and "| goal |" in md
    assert doc["plots"] == ["chain_gas.png"]
    assert (out / "chain_gas.png").read_bytes().startswith(PNG)
    assert "chain: wrote" in res.output


def test_round_refuses_an_unknown_model(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "round", "--models", "resnet9", "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert "unknown model" in res.output and not list(tmp_path.iterdir())


def test_round_refuses_sizes_that_are_not_integers(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "round", "--sizes", "3,five", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "comma-separated integers" in res.output


def test_transport_refuses_a_relay_link_that_is_not_a_rate_before_running_anything(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["bench", "transport", "--relay-links", "100mbit,fast", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "not a link rate" in res.output and not list(tmp_path.iterdir())
