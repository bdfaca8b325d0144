"""`swarm devnet up | run | fund` refusing bad input in-process, before any chain starts: a named
one-line error and its exit code, and nothing deployed or written in the devnet's directory."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from swarmd.cli.swarm import app

ACCOUNT = "0x" + "11" * 20


def _fails(args: list[str], code: int, *expected: str) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    for text in expected:
        assert text in res.output, res.output
    return res.output


@pytest.mark.parametrize("command", ["up", "run"])
def test_a_bad_datalist_is_named_and_nothing_is_deployed(tmp_path, command):
    good = tmp_path / "good.json"
    (tmp_path / "x.png").write_bytes(b"x")
    good.write_text(json.dumps({"training": [{"image": "x.png", "label": 0}], "validation": []}))
    root = tmp_path / "dn"
    _fails(
        ["devnet", command, "--dir", str(root), "--data", f"st-marys={tmp_path / 'missing.json'}"],
        5,
        "DataError",
        "--data st-marys",
        "does not exist",
    )
    _fails(
        ["devnet", command, "--dir", str(root), "--data", f"a={good}", "--data", f"a={good}"],
        2,
        "UsageError",
        "names site 'a' twice",
    )
    _fails(
        ["devnet", command, "--dir", str(root), "--data", f"a={good}"], 5, "--data a", "'validation' is empty"
    )
    assert not root.exists()


def test_contradicting_options_are_usage_errors(tmp_path):
    root = str(tmp_path / "dn")
    _fails(["devnet", "up", "--dir", root, "--task", "segmentation", "--data-kind", "classification"], 2)
    _fails(["devnet", "run", "--dir", root, "--task", str(tmp_path / "none.toml")], 2, "no such file")
    _fails(["devnet", "up", "--dir", root, "--sites", "0", "--task", "segmentation"], 2, "just the chain")
    _fails(["devnet", "run", "--dir", root, "--sites", "0"], 2)
    assert not (tmp_path / "dn").exists()


def test_fund_refuses_a_bad_account_amount_or_missing_devnet(tmp_path):
    root = str(tmp_path / "dn")
    _fails(["devnet", "fund", "0x11", "--dir", root], 2, "UsageError", "is not an Ethereum address")
    _fails(["devnet", "fund", ACCOUNT, "--eth", "lots", "--dir", root], 2, "is not a number of ether")
    _fails(["devnet", "fund", ACCOUNT, "--eth", "0", "--dir", root], 2, "must be a positive amount")
    _fails(["devnet", "fund", ACCOUNT, "--dir", root], 6, "DevnetError", "no devnet state")
