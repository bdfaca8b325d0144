"""Bad input to `swarm` commands, in-process: a named one-line error and its exit code, never a traceback,
and nothing written that the next command would trip over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmd.cli.swarm import app
from swarmd.train import example_task_file

CONTRACT = "0x" + "00" * 19 + "01"
ACCOUNT = "0x" + "11" * 20


def _fails(args: list[str], code: int, *expected: str) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    for text in expected:
        assert text in res.output, res.output
    return res.output


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not a url", "is not a URL"),
        ("http://not a url", "is not a URL"),
        ("ws://127.0.0.1:8545", "http:// or https://"),
        ("127.0.0.1:8545", "http:// or https://"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://", "names no host"),
    ],
)
def test_a_malformed_rpc_url_is_a_config_error(url: str, why: str) -> None:
    _fails(["ledger", "members", "--rpc", url, "--contract", CONTRACT], 2, "ConfigError", why)


def test_an_rpc_url_the_http_stack_refuses_is_named() -> None:
    # urlsplit accepts an empty host label; urllib3 does not: the client names it instead of crashing.
    _fails(["ledger", "members", "--rpc", "http://a..b:8545", "--contract", CONTRACT], 6, "ChainUnavailable")


def _init(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        "init",
        "--dir",
        str(tmp_path / name),
        "--name",
        name,
        "--task",
        str(example_task_file("cxr_densenet")),
        "--endpoint",
        "tcp://127.0.0.1:7000",
        "--kdf-iterations",
        "1000",
        *extra,
    ]


def test_init_refuses_a_bad_rpc_or_endpoint_before_writing_anything(tmp_path: Path) -> None:
    _fails(_init(tmp_path, "a", "--rpc", "not a url"), 2, "ConfigError", "chain.rpc_url")
    _fails(_init(tmp_path, "b", "--bind", "7000"), 2, "ConfigError", "transport.bind")
    _fails(_init(tmp_path, "c", "--ws", "http://127.0.0.1:8546"), 2, "ConfigError", "chain.ws_url")
    assert not any((tmp_path / n).exists() for n in "abc")
    res = CliRunner().invoke(app, _init(tmp_path, "d", "--ws", "ws://127.0.0.1:8546"))
    assert res.exit_code == 0, res.output
    assert 'ws_url = "ws://127.0.0.1:8546"' in (tmp_path / "d" / "site.toml").read_text()


def test_join_never_records_a_malformed_contract(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, _init(tmp_path, "s", "--rpc", "http://127.0.0.1:9"))
    assert res.exit_code == 0, res.output
    config = tmp_path / "s" / "site.toml"
    before = config.read_text()
    for bad in ("0x12", "0x" + "zz" * 20):
        _fails(["join", "--config", str(config), "--contract", bad], 2, "ConfigError", "chain.contract")
    assert config.read_text() == before
    out = _fails(["ledger", "members", "--config", str(config)], 2, "names no contract")
    assert out.count("\n") == 1


def test_an_env_override_with_a_bad_rpc_url_names_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = CliRunner().invoke(app, _init(tmp_path, "s", "--rpc", "http://127.0.0.1:9"))
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("SWARMD_CHAIN_RPC_URL", "not a url")
    out = _fails(["admin", "show", "--config", str(tmp_path / "s" / "site.toml")], 2, "chain.rpc_url")
    assert out.count("e.g. http://") == 1  # the hint once, not repeated by the file-name wrapper


def test_demo_data_into_an_unwritable_place_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _fails(["demo-data", "--out", str(blocker / "sub"), "--sites", "1"], 4, "StoreError", str(blocker))


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--task", "nope"], "--task must be one of classification, segmentation"),
        (["--task", "nope", "--quick"], "--task must be one of"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--sites", "0"], "--sites must be at least 1"),
    ],
)
def test_learning_bench_refuses_an_unknown_task_or_empty_run(
    args: list[str], why: str, tmp_path: Path
) -> None:
    _fails(["bench", "learning", "--out", str(tmp_path), *args], 2, "UsageError", why)


def test_devnet_in_an_uncreatable_directory_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for command in ("up", "run"):
        _fails(["devnet", command, "--dir", str(blocker / "dn"), "--block-time", "0"], 4, "StoreError")


def test_watch_refuses_a_negative_start_block() -> None:
    res = CliRunner().invoke(app, ["ledger", "watch", "--from-block", "-5", "--rpc", "http://127.0.0.1:9"])
    assert res.exit_code == 2 and "--from-block" in res.output


# --- swarm devnet up | run | fund: refused before any chain starts, nothing written in the devnet's dir


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
