"""The devnet manager: a detached anvil that outlives its Devnet object, state files, funding, and
clear errors when anvil is missing."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from eth_account import Account

from swarmd.errors import DevnetError
from swarmd.ledger import Devnet, Ledger
from swarmd.ledger import devnet as devnet_mod
from swarmd.ledger.devnet import find_anvil

pytestmark = pytest.mark.chain

ADDRESS = "0x000000000000000000000000000000000000bEEF"


def test_detached_devnet_is_found_again_and_stopped(tmp_path: Path) -> None:
    dev = Devnet.start(detach=True, accounts=3, log_file=tmp_path / "anvil.log")
    try:
        dev.save(tmp_path / "devnet.json")
        assert oct((tmp_path / "devnet.json").stat().st_mode & 0o777) == "0o600"
        again = Devnet.load(tmp_path / "devnet.json")
        assert again.rpc_url == dev.rpc_url and again.pid == dev.pid and len(again.dev_keys) == 3
        assert again.is_running()
        attached = Devnet.attach(dev.rpc_url, pid=dev.pid)
        assert attached.chain_id == 31337
        who = Account.create().address
        again.fund(who, ether=3)
        assert Ledger(dev.rpc_url, "0x" + "00" * 20).w3.eth.get_balance(who) == 3 * 10**18
        again.stop()
        assert not again.is_running() and again.pid is None
        again.stop()  # idempotent
    finally:
        dev.stop()


def test_stop_never_signals_a_pid_that_is_not_anvil(tmp_path: Path) -> None:
    # A stale state file whose pid now belongs to another program (here: this test process).
    stale = Devnet(rpc_url="http://127.0.0.1:1", dev_keys=(), pid=os.getpid())
    stale.stop()
    assert stale.pid is None  # we are still alive: nothing was signalled


def test_missing_anvil_and_bad_state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARMD_ANVIL", str(tmp_path / "no-anvil"))
    with pytest.raises(DevnetError, match="SWARMD_ANVIL"):
        Devnet.start()
    monkeypatch.delenv("SWARMD_ANVIL")
    monkeypatch.setattr(devnet_mod, "_repo_contracts_dir", lambda: tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevnetError) as exc:
        find_anvil()
    assert "scripts/bootstrap" in str(exc.value)
    with pytest.raises(DevnetError, match="no devnet state"):
        Devnet.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DevnetError, match="unreadable"):
        Devnet.load(tmp_path / "bad.json")


def test_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with Devnet.start(accounts=1) as first:
        port = int(first.rpc_url.rsplit(":", 1)[1])
        with pytest.raises(DevnetError, match="already in use"):
            Devnet.start(port=port, accounts=1)


def _dumped_accounts(state: Path) -> set[str]:
    try:
        return {a.lower() for a in json.loads(state.read_text())["accounts"]}
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return set()


def test_state_interval_survives_a_killed_anvil(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    dev = Devnet.start(accounts=2, state_file=state, state_interval=1)
    try:
        dev.fund(ADDRESS, ether=7)
        deadline = time.monotonic() + 20
        # Wait for a whole dump that holds the funded account, however slow the machine.
        while ADDRESS.lower() not in _dumped_accounts(state):
            assert time.monotonic() < deadline, "anvil never dumped the funded account"
            time.sleep(0.1)
        os.kill(dev.pid, signal.SIGKILL)  # type: ignore[arg-type]
        dev._proc.wait(timeout=5)  # type: ignore[union-attr]
        dev.pid = None
    finally:
        dev.stop()
    with Devnet.start(accounts=2, state_file=state) as again:
        assert Ledger(again.rpc_url, "0x" + "00" * 20).w3.eth.get_balance(ADDRESS) == 7 * 10**18


def test_mining_instantly_mines_each_transaction_then_restores_the_block_time() -> None:
    with Devnet.start(block_time=1, accounts=2) as dev:
        w3 = Ledger(dev.rpc_url, "0x" + "00" * 20).w3
        sender, to = w3.eth.accounts
        with dev.mining_instantly():
            before = w3.eth.block_number
            # Sent back to back: interval mining would put all three in one block. anvil mines on
            # its own task, so a receipt can lag the send by a moment; wait for it, never assume it.
            txs = [w3.eth.send_transaction({"from": sender, "to": to, "value": 1}) for _ in range(3)]
            blocks = [
                w3.eth.wait_for_transaction_receipt(tx, timeout=10, poll_latency=0.05)["blockNumber"]
                for tx in txs
            ]
            assert blocks == [before + 1, before + 2, before + 3]
            time.sleep(1.5)
            assert w3.eth.block_number == before + 3  # no empty blocks while idle
        idle = w3.eth.block_number
        time.sleep(2.5)
        assert w3.eth.block_number >= idle + 1  # 1 s blocks again
        txs = [w3.eth.send_transaction({"from": sender, "to": to, "value": 1}) for _ in range(3)]
        blocks = [w3.eth.wait_for_transaction_receipt(tx, timeout=10)["blockNumber"] for tx in txs]
        assert len(set(blocks)) < 3  # batched into the next block (two, if a tick fell between sends)
