"""`swarm ledger audit`'s bad input, in-process: a usage error for a wrong round selection, and a named
error (exit 6) for a chain that cannot be reached; never a traceback. The audit itself runs against
real daemons in tests/e2e/test_audit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bad_input import CONTRACT, _fails, _init
from typer.testing import CliRunner

from swarmd.cli.swarm import app


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    res = CliRunner().invoke(app, _init(tmp_path, "s", "--rpc", "http://127.0.0.1:9"))
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("SWARMD_CHAIN_CONTRACT", CONTRACT)
    return str(tmp_path / "s" / "site.toml")


def test_one_round_or_all(config: str) -> None:
    _fails(["ledger", "audit", "--config", config], 2, "UsageError", "give one ROUND or --rounds all")
    _fails(["ledger", "audit", "3", "--rounds", "all", "--config", config], 2, "give one ROUND")
    _fails(["ledger", "audit", "--rounds", "some", "--config", config], 2, "--rounds takes `all`")


def test_an_unreachable_chain_is_named(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A host the HTTP stack refuses at once: the same named error as a dead endpoint, without its retries.
    monkeypatch.setenv("SWARMD_CHAIN_RPC_URL", "http://a..b:8545")
    _fails(["ledger", "audit", "--rounds", "all", "--config", config], 6, "ChainUnavailable")
