from pathlib import Path

import pytest

from swarmd.config import (
    SITE_NAME_MAX,
    dump_config,
    load_config,
    parse_config,
    site_name_problem,
    write_config,
)
from swarmd.errors import ConfigError

GOOD = {
    "schema": 1,
    "site": {"name": "site-a", "state_dir": "state", "task": "swarm.toml"},
    "identity": {
        "keystore": "keys/account.json",
        "passphrase_file": "keys/pass",
        "curve_secret": "keys/curve.key",
    },
    "chain": {"rpc_url": "http://127.0.0.1:8545"},
    "transport": {"bind": "tcp://127.0.0.1:7700", "endpoint": "tcp://127.0.0.1:7700"},
}


def test_relative_paths_resolve_against_file_dir(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path, env={})
    assert cfg.site.state_dir == tmp_path / "state"
    assert cfg.train.device == "auto"
    assert cfg.control_socket == tmp_path / "state" / "control.sock"


def test_env_override_wins(tmp_path: Path) -> None:
    cfg = parse_config(
        GOOD, tmp_path, env={"SWARMD_CHAIN_RPC_URL": "http://10.0.0.1:8545", "SWARMD_TRAIN_AMP": "yes"}
    )
    assert cfg.chain.rpc_url == "http://10.0.0.1:8545"
    assert cfg.train.amp is True


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"transport": {"bind": "udp://x", "endpoint": "tcp://a:1"}}, "tcp:// or ipc://"),
        ({"chain": {"rpc_url": "http://x", "contract": "0x12"}}, "20-byte address"),
        ({"site": {"name": "a", "state_dir": "s"}}, "missing required key 'task'"),
        ({"extra": {}}, "unknown section"),
        ({"schema": 9}, "schema 9"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"train": {"threads": "many"}}, "expected an integer"),
        ({"chain": {"rpc_url": "not a url"}}, "chain.rpc_url is not a URL"),
        ({"chain": {"rpc_url": "http://host:port"}}, "chain.rpc_url is not a valid URL"),
        ({"chain": {"rpc_url": "ws://127.0.0.1:8546"}}, "http:// or https://"),
        ({"chain": {"rpc_url": "http://:8545"}}, "names no host"),
        ({"chain": {"rpc_url": "http://x", "contract": "0x" + "g" * 40}}, "20-byte address"),
        ({"chain": {"rpc_url": "http://x", "ws_url": "http://x:8546"}}, "ws_url .*ws:// or wss://"),
        ({"chain": {"rpc_url": "http://x", "ws_url": "ws://x:port"}}, "ws_url .*not a valid URL"),
        ({"chain": {"rpc_url": "http://x", "ws_url": "ws://:8546"}}, "ws_url .*names no host"),
        ({"chain": {"rpc_url": "http://x", "ws_url": "ws://a b"}}, "ws_url .*not a URL"),
        ({"site": {**GOOD["site"], "name": "St Mary"}}, "site.name 'St Mary': a site name is ASCII letters"),
        ({"site": {**GOOD["site"], "name": "0xC0ffee"}}, "must not start with 0x"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**GOOD, **patch}, tmp_path, env={})


def test_round_trip_through_file(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path, env={})
    path = write_config(cfg, tmp_path / "site.toml")
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_config(path, env={})
    assert dump_config(again) == dump_config(cfg)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_a_bad_rpc_url_from_the_environment_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chain\.rpc_url is not a URL") as info:
        parse_config(GOOD, tmp_path, env={"SWARMD_CHAIN_RPC_URL": "not a url"})
    assert info.value.hint and "http://127.0.0.1:8545" in info.value.hint


def test_a_websocket_for_new_heads_is_optional_and_may_come_from_the_environment(tmp_path: Path) -> None:
    assert parse_config(GOOD, tmp_path, env={}).chain.ws_url == ""
    cfg = parse_config(GOOD, tmp_path, env={"SWARMD_CHAIN_WS_URL": "wss://node.example:8546"})
    assert cfg.chain.ws_url == "wss://node.example:8546"
    again = load_config(write_config(cfg, tmp_path / "site.toml"), env={})
    assert again.chain.ws_url == "wss://node.example:8546"


@pytest.mark.parametrize("name", ["charite", "site-a", "St.Marys_2", "a", "x" * SITE_NAME_MAX])
def test_plain_short_site_names_are_valid(name: str) -> None:
    assert site_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "non-empty"),
        ("x" * (SITE_NAME_MAX + 1), "at most 32 characters, got 33"),
        ("Charit\u00e9", "ASCII letters"),  # look-alike letters are refused outright
        ("site a", "ASCII letters"),
        ("-lead", "starting with a letter or digit"),
        ("a\nb", "ASCII letters"),  # a name cannot forge a second log line
        ("0x70997970", "must not start with 0x"),
        ("0Xabc", "must not start with 0x"),
        (None, "non-empty string"),
    ],
)
def test_site_names_that_could_mislead_a_reader_are_refused(name: object, why: str) -> None:
    problem = site_name_problem(name)
    assert problem is not None and why in problem
