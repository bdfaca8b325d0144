"""A chain-only devnet (anvil recorded in its directory, with no consortium: `swarm devnet up --sites 0`)
and funding any account on a devnet with a real transfer from a dev account (`swarm devnet fund`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

import requests
from eth_typing import ChecksumAddress

from swarmd.errors import DevnetError, StoreError, UsageError
from swarmd.ledger import Devnet
from swarmd.ops.local import CHAIN_STATE, STATE_INTERVAL_S, recorded_devnet

CHAIN_ACCOUNTS = 10


@dataclass(frozen=True)
class Transfer:
    """A mined ether transfer on a devnet: who sent how much to whom, and the receiver's balance after."""

    sender: str
    to: str
    wei: int
    tx_hash: str
    balance_wei: int


def local_chain(root: Path, *, block_time: float | None, accounts: int = CHAIN_ACCOUNTS) -> Devnet:
    """anvil alone, detached and recorded in `root` (devnet.json, anvil.log, its chain in CHAIN_STATE)
    for `swarm devnet down` / `fund`; the chain an earlier chain-only devnet saved there comes back,
    on the same port."""
    root = root.resolve()
    if recorded_devnet(root) is not None:
        raise DevnetError(f"a devnet is already up in {root}", hint="`swarm devnet down` first")
    if (root / "consortium.json").exists():
        raise DevnetError(
            f"{root} holds a provisioned consortium, not a chain-only devnet",
            hint="`swarm devnet up` without --sites 0 brings it back; or use another --dir",
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the devnet directory {root}: {exc.strerror or exc}") from None
    dev = Devnet.start(
        port=_recorded_port(root),
        block_time=block_time,
        accounts=accounts,
        state_file=root / CHAIN_STATE,
        state_interval=STATE_INTERVAL_S,
        detach=True,
        log_file=root / "anvil.log",
    )
    try:
        dev.save(root / "devnet.json")
    except BaseException:
        dev.stop()
        raise
    return dev


def _recorded_port(root: Path) -> int | None:
    """The port a chain-only devnet recorded in `root` used: site configs written since name it."""
    path = root / "devnet.json"
    if not path.exists():
        return None
    try:
        return urlsplit(Devnet.load(path).rpc_url).port
    except (DevnetError, ValueError):
        return None


def parse_ether(text: str) -> int:
    """'1.5' -> wei; UsageError unless a positive decimal number of ether."""
    try:
        wei = Decimal(text) * 10**18
    except InvalidOperation:
        raise UsageError(f"--eth {text!r} is not a number of ether") from None
    if not wei.is_finite() or wei < 1 or wei != wei.to_integral_value():
        raise UsageError(f"--eth {text!r} must be a positive amount of ether (at most 18 decimals)")
    return int(wei)


def fund_account(root: Path, account: str, wei: int) -> Transfer:
    """Send `wei` to `account` from the recorded devnet's last dev account (provisioning leaves it
    unused) and wait until it is mined. UsageError for a bad address; DevnetError when the devnet in
    `root` is missing or down, or its node refuses the transfer."""
    from web3 import Web3

    if not Web3.is_address(account):
        raise UsageError(f"{account!r} is not an Ethereum address", hint="0x followed by 40 hex digits")
    to = Web3.to_checksum_address(account)
    dev = Devnet.load(root.resolve() / "devnet.json")
    if not dev.is_running():
        raise DevnetError(f"the devnet in {root.resolve()} is down", hint=f"`swarm devnet up --dir {root}`")
    if not dev.dev_keys:
        raise DevnetError(f"the devnet record in {root.resolve()} holds no dev keys to send from")
    return _send(dev, dev.dev_keys[-1], to, wei)


def _send(dev: Devnet, key: str, to: ChecksumAddress, wei: int) -> Transfer:
    from eth_account import Account
    from web3.exceptions import Web3Exception

    from swarmd.ledger.rpc import make_web3

    sender = Account.from_key(key)
    w3 = make_web3(dev.rpc_url, timeout=5.0)
    try:
        tx = {
            "to": to,
            "value": wei,
            "gas": 21_000,
            "gasPrice": w3.eth.gas_price,
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "chainId": dev.chain_id,
        }
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.1)
        balance = int(w3.eth.get_balance(to))
    except (requests.RequestException, ConnectionError) as exc:
        raise DevnetError(f"the devnet RPC {dev.rpc_url} did not answer: {type(exc).__name__}") from None
    except (Web3Exception, ValueError) as exc:
        raise DevnetError(f"the devnet refused the transfer to {to}: {exc}") from None
    if receipt["status"] != 1:
        raise DevnetError(f"the transfer to {to} failed on chain (a contract that refuses ether?)")
    return Transfer(sender.address, to, wei, "0x" + bytes(tx_hash).hex(), balance)
