"""The Besu QBFT kit: a genesis whose extraData decodes back to the validator set, a key per node whose
address is that validator (0600), a node config per node, and every node's enode in static-nodes.json.
Besu is not installable here: nothing runs the chain; the files are checked."""

from __future__ import annotations

import json
import stat

import pytest
import tomllib
from eth_account import Account

from swarmd.errors import UsageError
from swarmd.ops.besu import besu_kit, decode_extra_data, qbft_extra_data

# The example of Besu's docs for `besu rlp encode --type=QBFT_EXTRA_DATA` (four validators).
BESU_DOCS_VALIDATORS = [
    "0x4592c8e45706cc08b8f44b11e43cba0cfc5892cb",
    "0x06e23768a0f59cf365e18c2e0c89e151bcdedc70",
    "0xc5327f96ee02d7bcbc1bf1236b8c15148971e1de",
    "0xab5e7f4061c605820d3744227eed91ff8e2c8908",
]
BESU_DOCS_EXTRA_DATA = (
    "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f854944592c8e45706cc08b8f44b11e4"
    "3cba0cfc5892cb9406e23768a0f59cf365e18c2e0c89e151bcdedc7094c5327f96ee02d7bcbc1bf1236b8c15148971e1de94ab"
    "5e7f4061c605820d3744227eed91ff8e2c8908c080c0"
)


def test_extra_data_is_besus_encoding_and_decodes_back() -> None:
    assert qbft_extra_data(BESU_DOCS_VALIDATORS) == BESU_DOCS_EXTRA_DATA
    assert [a.lower() for a in decode_extra_data(BESU_DOCS_EXTRA_DATA)] == BESU_DOCS_VALIDATORS
    with pytest.raises(UsageError, match="not a QBFT extraData"):
        decode_extra_data("0x" + "00" * 32)


def test_the_kit_for_four_hospitals(tmp_path) -> None:
    site = Account.create().address
    hosts = ["besu.charite.example", "besu.ukb.example", "besu.lmu.example", "besu.uke.example"]
    kit = besu_kit(tmp_path / "kit", validators=4, hosts=hosts, chain_id=4242, fund=[site.lower()])
    assert kit.faults_tolerated == 1
    doc = json.loads(kit.genesis.read_text())
    qbft = doc["config"]["qbft"]
    assert doc["config"]["chainId"] == 4242 and qbft["blockperiodseconds"] == 2 and "epochlength" in qbft
    assert doc["difficulty"] == "0x1" and doc["mixHash"].startswith("0x6374")
    validators = [v.address for v in kit.validators]
    assert decode_extra_data(doc["extraData"]) == validators
    assert set(doc["alloc"]) == {a[2:] for a in [*validators, site]}  # validators and the site are funded
    enodes = json.loads((kit.root / "static-nodes.json").read_text())
    assert (kit.root / "bootnodes.txt").read_text().strip() == ",".join(enodes)
    for node, host, enode in zip(kit.validators, hosts, enodes, strict=True):
        key = node.folder / "key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        account = Account.from_key(key.read_text().strip())
        assert account.address == node.address  # the node key is the validator
        assert enode == f"enode://{account._key_obj.public_key.to_hex()[2:]}@{host}:30303"
        cfg = tomllib.loads((node.folder / "config.toml").read_text())
        assert (cfg["p2p-host"], cfg["p2p-port"], cfg["rpc-http-port"]) == (host, 30303, 8545)
        assert (cfg["rpc-ws-enabled"], cfg["rpc-ws-host"], cfg["rpc-ws-port"]) == (True, "127.0.0.1", 8546)
        assert (
            cfg["node-private-key-file"] == "key"
            and enode not in cfg["bootnodes"]
            and len(cfg["bootnodes"]) == 3
        )


def test_nodes_on_one_host_get_their_own_ports(tmp_path) -> None:
    kit = besu_kit(tmp_path / "kit", validators=2)
    ports = [tomllib.loads((v.folder / "config.toml").read_text())["p2p-port"] for v in kit.validators]
    assert ports == [30303, 30304] and kit.validators[1].enode.endswith("@127.0.0.1:30304")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validators": 0}, "between 1 and 64"),
        ({"validators": 2, "hosts": ["a"]}, "1 hosts for 2 validators"),
        ({"validators": 1, "fund": ["0x12"]}, "is not an account address"),
        ({"validators": 1, "block_period": 0}, "at least 1 s"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        besu_kit(tmp_path / "kit", **kwargs)


def test_a_non_empty_folder_is_refused(tmp_path) -> None:
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "genesis.json").write_text("{}")
    with pytest.raises(UsageError, match="not empty"):
        besu_kit(tmp_path / "kit", validators=1)
