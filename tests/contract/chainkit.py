"""Helpers for the chain tests: deterministic hashes, and deploying a consortium of admitted sites."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from swarmd.ledger import DeployParams, Devnet, Ledger
from swarmd.ledger.devnet import rpc_call

N_ACCOUNTS = 16


def h32(label: str | int) -> bytes:
    """A deterministic, non-zero 32-byte hash for tests."""
    return hashlib.sha256(str(label).encode()).digest()


def curve_key(i: int) -> bytes:
    return hashlib.sha256(f"curve-{i}".encode()).digest()


@dataclass
class Consortium:
    """A deployed SwarmLedger: the admin's client and one client per site account."""

    devnet: Devnet
    admin: Ledger
    sites: list[Ledger]
    outsiders: list[Ledger]
    params: DeployParams

    def site(self, address: str) -> Ledger:
        return next(s for s in self.sites + self.outsiders if s.sender == address)

    def mine(self, blocks: int = 1) -> None:
        rpc_call(self.devnet.rpc_url, "anvil_mine", [hex(blocks)])


def deploy_consortium(
    devnet: Devnet,
    accounts: list[LocalAccount],
    *,
    sites: int = 3,
    admitted: int | None = None,
    outsiders: int = 1,
    min_peers: int = 2,
    commit_window: int = 5,
    leader_timeout: int = 5,
    majority: bool = False,
    secure_aggregation: bool = False,
) -> Consortium:
    """Deploy (account 0 is the admin), let `sites` accounts join and admit the first `admitted` of them."""
    params = DeployParams(
        h32("task"), h32("initial"), min_peers, commit_window, leader_timeout, majority, secure_aggregation
    )
    admin = Ledger.deploy(devnet.rpc_url, accounts[0], params, retries=2, backoff=0.05)
    clients = [Ledger(devnet.rpc_url, admin.address, a, retries=2, backoff=0.05) for a in accounts[1:]]
    members, others = clients[:sites], clients[sites : sites + outsiders]
    for i, site in enumerate(members):
        site.request_join(curve_key(i), f"tcp://127.0.0.1:{7000 + i}")
    for site in members[: sites if admitted is None else admitted]:
        admin.admit(site.sender)  # type: ignore[arg-type]
    return Consortium(devnet, admin, members, others, params)
