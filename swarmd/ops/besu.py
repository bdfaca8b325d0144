"""A starter kit for a real consortium chain: Hyperledger Besu with QBFT, one validator per hospital.

`besu_kit(out, validators=N)` writes what each hospital's Besu node needs and nothing swarmd runs:
a fresh validator key per node (files 0600, the key's address is the validator), `genesis.json`
with the QBFT config and the RLP-encoded extraData naming the validator set, a Besu `config.toml`
per node, and `static-nodes.json` / `bootnodes.txt` with every node's enode URL. Besu itself is
not installable here, so nothing runs it in CI: the tests check the files and decode the
extraData back to the validators (docs/deploy.md has the steps).

QBFT extraData is RLP([32-byte vanity, [validator addresses], no vote ([]), round 0, no seals
([])]), as `besu rlp encode --type=QBFT_EXTRA_DATA` writes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rlp
from eth_account import Account
from eth_utils import to_bytes, to_checksum_address

from swarmd.errors import StoreError, UsageError
from swarmd.fsutil import atomic_write_text

VANITY = b"\0" * 32
P2P_PORT = 30303
RPC_PORT = 8545
# A permissioned chain has no fee market: the gas limit only bounds a block's work.
GAS_LIMIT = "0x1fffffffffffff"
FUNDED_BALANCE = hex(10**6 * 10**18)  # 1e6 ether, in wei: gas for years of rounds
# QBFT genesis blocks carry this mixHash (Besu's "BFT" marker) and difficulty 1.
QBFT_MIX_HASH = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"


@dataclass(frozen=True)
class Validator:
    """One Besu node of the kit: its folder, its validator address and its enode URL."""

    name: str
    address: str
    enode: str
    folder: Path


@dataclass(frozen=True)
class BesuKit:
    root: Path
    chain_id: int
    genesis: Path
    validators: tuple[Validator, ...]

    @property
    def faults_tolerated(self) -> int:
        """QBFT keeps going with f faulty validators out of 3f+1."""
        return (len(self.validators) - 1) // 3


def qbft_extra_data(validators: Sequence[str]) -> str:
    """The genesis extraData that makes `validators` (addresses) the initial QBFT validator set."""
    addresses = [to_bytes(hexstr=a) for a in validators]
    if any(len(a) != 20 for a in addresses):
        raise UsageError("a validator address must be 20 bytes")
    return "0x" + rlp.encode([VANITY, addresses, [], 0, []]).hex()


def decode_extra_data(extra_data: str) -> list[str]:
    """The validator addresses in a QBFT extraData (checksummed); UsageError if it is not one."""
    try:
        fields = rlp.decode(to_bytes(hexstr=extra_data))
    except (ValueError, rlp.exceptions.DecodingError) as exc:
        raise UsageError(f"not a QBFT extraData: {exc}") from None
    if not (isinstance(fields, list) and len(fields) == 5):
        raise UsageError("not a QBFT extraData: not a list of [vanity, validators, vote, round, seals]")
    vanity, validators, vote, _round, seals = fields
    well_formed = isinstance(validators, list) and all(
        isinstance(a, bytes) and len(a) == 20 for a in validators
    )
    if len(vanity) != 32 or not well_formed or not isinstance(vote, list) or not isinstance(seals, list):
        raise UsageError("not a QBFT extraData: no 32-byte vanity, 20-byte validators, vote and seal lists")
    return [to_checksum_address(a) for a in validators]


def genesis(chain_id: int, validators: Sequence[str], fund: Sequence[str], block_period: int) -> dict:
    """Besu's genesis for a QBFT chain: London rules, zero base fee, `fund` accounts pre-funded."""
    return {
        "config": {
            "chainId": chain_id,
            "berlinBlock": 0,
            "londonBlock": 0,
            "zeroBaseFee": True,
            "qbft": {
                "blockperiodseconds": block_period,
                "epochlength": 30000,
                "requesttimeoutseconds": max(4, 2 * block_period),
            },
        },
        "nonce": "0x0",
        "timestamp": "0x0",
        "gasLimit": GAS_LIMIT,
        "difficulty": "0x1",
        "mixHash": QBFT_MIX_HASH,
        "coinbase": "0x" + "00" * 20,
        "alloc": {to_checksum_address(a)[2:]: {"balance": FUNDED_BALANCE} for a in fund},
        "extraData": qbft_extra_data(validators),
    }


def node_config(host: str, p2p_port: int, rpc_port: int, enodes: Sequence[str]) -> str:
    """A Besu config.toml for one node; paths are relative to the node's folder (start Besu there)."""
    bootnodes = ", ".join(f'"{e}"' for e in enodes)
    return (
        "# Besu node of a swarmd consortium chain (written by `swarm chain besu-kit`).\n"
        "# Start it in this folder: besu --config-file=config.toml\n"
        'data-path = "data"\n'
        'genesis-file = "../genesis.json"\n'
        'node-private-key-file = "key"\n'
        'static-nodes-file = "../static-nodes.json"\n'
        f"bootnodes = [{bootnodes}]\n"
        'p2p-interface = "0.0.0.0"\n'
        f'p2p-host = "{host}"  # what this node announces, as its enode in static-nodes.json says\n'
        f"p2p-port = {p2p_port}\n"
        "rpc-http-enabled = true\n"
        "# Only the hospital's own swarmd host needs RPC: keep it local, or firewall it (docs/deploy.md).\n"
        'rpc-http-host = "127.0.0.1"\n'
        f"rpc-http-port = {rpc_port}\n"
        'rpc-http-api = ["ETH", "NET", "WEB3", "QBFT"]\n'
        "# The daemon's chain.ws_url (swarm init --ws): new blocks pushed instead of polled.\n"
        "rpc-ws-enabled = true\n"
        'rpc-ws-host = "127.0.0.1"\n'
        f"rpc-ws-port = {rpc_port + 1}\n"
        'rpc-ws-api = ["ETH", "NET", "WEB3"]\n'
        'host-allowlist = ["localhost", "127.0.0.1"]\n'
        "min-gas-price = 0\n"
    )


def _address(text: str) -> str:
    try:
        return to_checksum_address(text)
    except ValueError:
        raise UsageError(f"--fund {text!r} is not an account address (0x and 40 hex digits)") from None


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def besu_kit(
    out: Path,
    *,
    validators: int,
    hosts: Sequence[str] = (),
    chain_id: int = 1337,
    block_period: int = 2,
    fund: Sequence[str] = (),
) -> BesuKit:
    """Write the kit for `validators` nodes into the new folder `out`. `hosts`: each node's address as the
    others dial it (default 127.0.0.1; nodes sharing a host get consecutive ports). `fund`: accounts
    (e.g. every site's `swarm init` account) that genesis gives a balance, as well as the validators."""
    if not 1 <= validators <= 64:
        raise UsageError(f"--validators must be between 1 and 64, got {validators}")
    if hosts and len(hosts) != validators:
        raise UsageError(f"{len(hosts)} hosts for {validators} validators", hint="give one --host per node")
    if block_period < 1:
        raise UsageError(f"--block-period must be at least 1 s, got {block_period}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty", hint="choose a new directory: the kit holds fresh keys")
    fund = [_address(a) for a in fund]
    hosts = list(hosts) or ["127.0.0.1"] * validators
    shared = len(set(hosts)) < len(hosts)
    keys = [Account.create() for _ in range(validators)]
    nodes = []
    for i, (host, key) in enumerate(zip(hosts, keys, strict=True)):
        pub = key._key_obj.public_key.to_hex()[2:]  # 64 bytes, as an enode names a node
        p2p = P2P_PORT + i if shared else P2P_PORT
        name = f"node-{i + 1}"
        nodes.append(Validator(name, key.address, f"enode://{pub}@{host}:{p2p}", out / name))
    try:
        for i, (node, key) in enumerate(zip(nodes, keys, strict=True)):
            node.folder.mkdir(parents=True)
            _write_secret(node.folder / "key", "0x" + bytes(key.key).hex() + "\n")
            (node.folder / "key.pub").write_text(key._key_obj.public_key.to_hex() + "\n")
            (node.folder / "address").write_text(node.address + "\n")
            others = [n.enode for n in nodes if n is not node]
            rpc = RPC_PORT + i if shared else RPC_PORT
            p2p = int(node.enode.rsplit(":", 1)[1])
            atomic_write_text(node.folder / "config.toml", node_config(hosts[i], p2p, rpc, others))
        doc = genesis(
            chain_id, [n.address for n in nodes], [*(n.address for n in nodes), *fund], block_period
        )
        path = atomic_write_text(out / "genesis.json", json.dumps(doc, indent=2) + "\n")
        atomic_write_text(out / "static-nodes.json", json.dumps([n.enode for n in nodes], indent=2) + "\n")
        atomic_write_text(out / "bootnodes.txt", ",".join(n.enode for n in nodes) + "\n")
        table = [{"name": n.name, "address": n.address, "enode": n.enode} for n in nodes]
        atomic_write_text(out / "validators.json", json.dumps(table, indent=2) + "\n")
    except OSError as exc:
        raise StoreError(f"cannot write the Besu kit under {out}: {exc.strerror or exc}") from None
    return BesuKit(out, chain_id, path, tuple(nodes))
