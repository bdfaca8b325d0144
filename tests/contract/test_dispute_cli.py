"""`swarm ledger dispute` against a real anvil, run in-process with typer's runner and real site configs: a
round whose leader includes itself, calls one committer NOT_DELIVERED and another FAILED_VALIDATION. Every
refusal is checked before anything is sent, by name and exit status (no receipt 20, not finalized 21, not
a committer 22, included 23, not a delivery claim 24 with the audit hint, another term's or signer's
receipt 25, already disputed 26, an unreadable receipt file 4); the leader's own receipt is recorded once,
and `swarm ledger rounds`, `round` and `members` then show the dispute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chainkit import Consortium, commit, elect, h32, site_toml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner, Result

from swarmd.cli.swarm import app
from swarmd.daemon.receipts import ReceiptBook
from swarmd.errors import ChainUnavailable
from swarmd.ledger import Ledger, Outcome, RoundInfo
from swarmd.ledger.receipt import Receipt, sign_receipt
from swarmd.ops.dispute import prepare_dispute

pytestmark = pytest.mark.chain


def _swarm(*args: str, code: int = 0) -> Result:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == code, res.output
    return res


class Sites:
    """site.toml and receipt book per account of the consortium, and the leader's key to sign receipts."""

    def __init__(self, c: Consortium, accounts: list[LocalAccount], tmp: Path) -> None:
        self.c = c
        self.keys = {a.address: a for a in accounts}
        self.configs: dict[str, Path] = {}
        for i, client in enumerate(c.sites + c.outsiders):
            addr = str(client.sender)
            self.configs[addr] = site_toml(
                tmp, f"s{i}", self.keys[addr].key.hex(), c.devnet.rpc_url, c.admin.address
            )

    def book(self, site: str) -> ReceiptBook:
        return ReceiptBook(self.configs[site].parent / "state")

    def receipt(
        self, info: RoundInfo, site: str, signer: LocalAccount | None = None, term: int | None = None
    ):
        commit_ = info.commit_of(site)
        assert commit_ is not None and info.leader is not None
        receipt = Receipt(info.round, info.term if term is None else term, site, commit_.update_hash)
        key = signer or self.keys[info.leader]
        self.book(site).put(
            receipt, sign_receipt(key, self.c.admin.address, self.c.admin.chain_id(), receipt)
        )

    def dispute(self, site: str, *args: str, code: int = 0) -> Result:
        return _swarm("ledger", "dispute", *args, "--config", str(self.configs[site]), code=code)


@pytest.fixture
def dropped_round(consortium: Consortium, accounts: list[LocalAccount], tmp_path: Path):
    """Round 0 finalized: the leader included, `dropped` NOT_DELIVERED, `invalid` FAILED_VALIDATION."""
    c = consortium
    sites = Sites(c, accounts, tmp_path)
    for i, site in enumerate(c.sites):
        commit(site, 0, h32(f"u-0-{i}"), 10 + i)
    elect(c, 0)
    info = c.admin.round(0)
    assert info.leader is not None
    dropped, invalid = (a for a in info.committers if a != info.leader)
    outcomes = {
        info.leader: Outcome.INCLUDED,
        dropped: Outcome.NOT_DELIVERED,
        invalid: Outcome.FAILED_VALIDATION,
    }
    c.site(info.leader).finalize(0, h32("m0"), outcomes)
    return sites, c.admin.round(0), dropped, invalid


def test_every_refusal_is_named_and_nothing_is_sent(dropped_round) -> None:
    sites, info, dropped, invalid = dropped_round
    c, leader = sites.c, info.leader
    start = c.admin.block_number()
    assert "NoReceipt" in sites.dispute(dropped, "0", code=20).output
    commit(c.site(dropped), 1, h32("u-1"), 5)  # round 1 is open
    assert "RoundNotFinalized" in sites.dispute(dropped, "1", code=21).output
    assert "does not exist" in sites.dispute(dropped, "7", code=2).output
    outsider = str(c.outsiders[0].sender)
    assert "NotACommitter" in sites.dispute(outsider, "0", code=22).output
    sites.receipt(info, leader)
    assert "NothingToDispute" in sites.dispute(leader, "0", code=23).output
    sites.receipt(info, invalid)  # the leader accepted it, then excluded it as invalid
    out = sites.dispute(invalid, "0", code=24).output
    assert "NotDisputable" in out and "FAILED_VALIDATION" in out and "swarm ledger audit" in out

    sites.receipt(info, dropped, term=info.term + 1)
    assert "ReceiptMismatch" in sites.dispute(dropped, "0", code=25).output
    sites.receipt(info, dropped, signer=Account.create())
    out = sites.dispute(dropped, "0", code=25).output
    assert "ReceiptMismatch" in out and "not by the round's leader" in out
    sites.book(dropped).path(0).write_text("{not json")
    assert "CorruptReceipt" in sites.dispute(dropped, "0", code=4).output
    assert "ROUND or --all" in sites.dispute(dropped, code=2).output
    assert "ROUND or --all" in sites.dispute(dropped, "0", "--all", code=2).output
    assert c.admin.disputes(start) == [] and c.admin.disputes_against(leader) == 0  # type: ignore[arg-type]


def test_the_leaders_receipt_is_recorded_once_and_shown(dropped_round) -> None:
    sites, info, dropped, invalid = dropped_round
    c, leader = sites.c, str(info.leader)
    sites.receipt(info, dropped)
    sites.receipt(info, invalid)
    doc = json.loads(sites.dispute(dropped, "0", "--json").stdout)
    assert (doc["round"], doc["site"], doc["leader"], doc["disputes_against"]) == (0, dropped, leader, 1)
    assert doc["disputed"] is True
    [recorded] = c.admin.disputes(info.finalized_block or 0)
    assert (recorded.round, recorded.site, recorded.leader) == (0, dropped, leader)
    assert c.admin.disputes_against(leader) == 1
    assert "RoundAlreadyDisputed" in sites.dispute(dropped, "0", code=26).output
    # --all reports each round with a receipt; routine refusals (already disputed, no delivery claim) exit 0.
    assert "RoundAlreadyDisputed" in sites.dispute(dropped, "--all").output
    [row] = json.loads(sites.dispute(invalid, "--all", "--json").stdout)
    assert (row["round"], row["disputed"], row["error"], row["exit_code"]) == (0, False, "NotDisputable", 24)

    chain = ("--rpc", c.devnet.rpc_url, "--contract", c.admin.address)
    shown = f"{dropped[:12]} against {leader[:12]}"
    assert f"round 0 disputes: {shown}" in _swarm("ledger", "rounds", *chain).output
    assert f"disputes: {shown}" in _swarm("ledger", "round", "0", *chain).output
    [r0] = [r for r in json.loads(_swarm("ledger", "rounds", *chain, "--json").stdout) if r["round"] == 0]
    assert [(d["site"], d["leader"]) for d in r0["disputes"]] == [(dropped, leader)]
    members = json.loads(_swarm("ledger", "members", *chain, "--json").stdout)
    assert {m["account"]: m["disputes_against"] for m in members}[leader] == 1
    assert sum(m["disputes_against"] for m in members) == 1


def test_an_unreachable_chain_is_named(dropped_round) -> None:
    sites, _, dropped, _ = dropped_round
    offline = Ledger("http://127.0.0.1:9", sites.c.admin.address, retries=0)
    with pytest.raises(ChainUnavailable):
        prepare_dispute(offline, sites.book(dropped), dropped, 0)
