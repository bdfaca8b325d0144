"""`swarm devnet up --sites 0` (the chain alone), `swarm devnet fund` and `down`, on a real anvil: the
chain comes up with its funded dev accounts printed, a fresh account receives ether in a mined transfer
(its balance read back from the chain), the chain and the balance survive `down` and `up` on the same
URL, and `down` stops anvil."""

from __future__ import annotations

import re

import pytest
from eth_account import Account
from typer.testing import CliRunner
from web3 import Web3

from swarmd.cli.swarm import app
from swarmd.ledger import Devnet
from swarmd.ledger.rpc import make_web3

pytestmark = pytest.mark.chain


def swarm(*args: str, code: int = 0) -> str:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return res.output


def test_chain_only_devnet_fund_and_down(tmp_path):
    root = str(tmp_path / "chain")
    out = swarm("devnet", "up", "--sites", "0", "--dir", root, "--block-time", "0")
    try:
        url = re.search(r"RPC (http://127\.0\.0\.1:\d+), chain id 31337", out)
        assert url is not None, out
        dev = Devnet.load(tmp_path / "chain" / "devnet.json")
        assert dev.rpc_url == url.group(1) and dev.is_running()
        listed = re.findall(r"^\s+\d+: (0x[0-9a-fA-F]{40})$", out, flags=re.M)
        assert listed == [Account.from_key(k).address for k in dev.dev_keys] and len(listed) == 10
        w3 = make_web3(dev.rpc_url)
        assert all(w3.eth.get_balance(a) > 0 for a in listed)  # funded dev accounts

        fresh = Account.create().address
        assert w3.eth.get_balance(fresh) == 0
        sent = swarm("devnet", "fund", fresh.lower(), "--eth", "2.5", "--dir", root)
        assert f"sent 2.5 ETH to {fresh}" in sent and "balance now 2.5 ETH" in sent
        assert w3.eth.get_balance(fresh) == Web3.to_wei(2.5, "ether")
        swarm("devnet", "fund", fresh, "--dir", root)  # default: 10 more
        assert w3.eth.get_balance(fresh) == Web3.to_wei(12.5, "ether")
        refused = swarm("devnet", "fund", fresh, "--eth", "1e9", "--dir", root, code=6)
        assert "DevnetError" in refused and "refused the transfer" in refused

        again = swarm("devnet", "up", "--sites", "0", "--dir", root, code=6)
        assert "already up" in again
        busy = swarm("devnet", "run", "--dir", root, code=6)
        assert "holds a chain-only devnet" in busy
        swarm("devnet", "down", "--dir", root)
        assert not dev.is_running()
        down = swarm("devnet", "fund", fresh, "--dir", root, code=6)
        assert "DevnetError" in down and "is down" in down

        swarm("devnet", "up", "--sites", "0", "--dir", root, "--block-time", "0")  # the saved chain again
        assert Devnet.load(tmp_path / "chain" / "devnet.json").rpc_url == dev.rpc_url
        assert w3.eth.get_balance(fresh) == Web3.to_wei(12.5, "ether")
    finally:
        swarm("devnet", "down", "--dir", root)
    assert not Devnet.load(tmp_path / "chain" / "devnet.json").is_running()
