"""`swarmd run` refuses a test fault outside the suite with one named line (exit 2), before it starts
anything; inside the suite a FORGE_MERGE leader's model is no longer the merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_bad_input import _init
from typer.testing import CliRunner

from swarmd.cli.swarm import app as swarm_app
from swarmd.cli.swarmd import app
from swarmd.codec import content_hash
from swarmd.daemon.faults import ENV, GUARD
from swarmd.daemon.leader import forged


def test_a_fault_outside_the_suite_stops_swarmd_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CliRunner().invoke(swarm_app, _init(tmp_path, "s", "--rpc", "http://127.0.0.1:9")).exit_code == 0
    monkeypatch.setenv(ENV, "forge-merge")
    monkeypatch.delenv(GUARD, raising=False)
    res = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "s" / "site.toml")])
    assert res.exit_code == 2, res.output
    assert "ConfigError" in res.output and "refused outside the test suite" in res.output
    assert "Traceback" not in res.output


def test_a_forged_merge_hashes_differently_and_leaves_the_merge_alone() -> None:
    merged = {"n": torch.tensor(3), "w": torch.zeros(4)}
    before = content_hash(merged)
    out = forged(merged)
    assert content_hash(out) != before == content_hash(merged)
