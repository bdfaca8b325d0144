"""Helpers for the chain tests: deterministic hashes and election secrets, deploying a consortium of admitted
sites, and the commit -> reveal -> elect -> finalize steps as a daemon takes them."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from swarmd.config import (
    ChainSection,
    IdentitySection,
    SiteConfig,
    SiteSection,
    TransportSection,
    write_config,
)
from swarmd.identity import create_identity
from swarmd.ledger import DeployParams, Devnet, Ledger, Outcome
from swarmd.ledger.devnet import rpc_call
from swarmd.ledger.receipt import election_seal

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
    reveal_window: int = 10,
) -> Consortium:
    """Deploy (account 0 is the admin), let `sites` accounts join and admit the first `admitted` of them."""
    params = DeployParams(
        h32("task"),
        h32("initial"),
        min_peers,
        commit_window,
        leader_timeout,
        majority,
        secure_aggregation,
        reveal_window=reveal_window,
    )
    admin = Ledger.deploy(devnet.rpc_url, accounts[0], params, retries=2, backoff=0.05)
    clients = [Ledger(devnet.rpc_url, admin.address, a, retries=2, backoff=0.05) for a in accounts[1:]]
    members, others = clients[:sites], clients[sites : sites + outsiders]
    for i, site in enumerate(members):
        site.request_join(curve_key(i), f"tcp://127.0.0.1:{7000 + i}")
    for site in members[: sites if admitted is None else admitted]:
        admin.admit(site.sender)  # type: ignore[arg-type]
    return Consortium(devnet, admin, members, others, params)


def secret(site: str, r: int) -> bytes:
    """The election secret a test site uses in round `r` (deterministic, distinct per site and round)."""
    return h32(f"secret-{site.lower()}-{r}")


def commit(site: Ledger, r: int, update_hash: bytes, n_samples: int, **kwargs: Any) -> TxReceipt:
    """`site` commits with the seal of its test secret."""
    seal = election_seal(secret(str(site.sender), r), str(site.sender), r)
    return site.commit(r, update_hash, n_samples, seal=seal, **kwargs)


def reveal_all(c: Consortium, r: int, *, skip: Collection[str] = ()) -> list[TxReceipt]:
    """Every committer of round `r` not in `skip` that has not revealed yet reveals its secret."""
    info = c.admin.round(r)
    out = []
    for site in info.committers:
        if site not in skip and not info.has_revealed(site):
            out.append(c.site(site).reveal(r, secret(site, r)))
    return out


def elect(c: Consortium, r: int, *, skip: Collection[str] = ()) -> TxReceipt:
    """Reveal (all but `skip`, then wait out the reveal window if anyone withholds) and elect."""
    reveal_all(c, r, skip=skip)
    if skip:
        c.mine(c.params.reveal_window + 1)
    return c.admin.elect(r)


def outcomes(
    c: Consortium, r: int, included: Iterable[str] | None = None, recovered: Iterable[str] = ()
) -> dict[str, Outcome]:
    """An honest leader's accounting: `included` (default: every revealer), `recovered`, NOT_REVEALED for
    the non-revealers, NOT_DELIVERED for the rest."""
    info = c.admin.round(r)
    inc = set(info.revealed if included is None else included)
    rec = set(recovered)
    out = {}
    for site in info.committers:
        if not info.has_revealed(site):
            out[site] = Outcome.NOT_REVEALED
        elif site in inc:
            out[site] = Outcome.INCLUDED
        elif site in rec:
            out[site] = Outcome.RECOVERED
        else:
            out[site] = Outcome.NOT_DELIVERED
    return out


def finalize(
    c: Consortium, r: int, merged: bytes, included: Iterable[str] | None = None, recovered: Iterable[str] = ()
) -> TxReceipt:
    """The round's leader finalizes with `outcomes(...)`."""
    leader = c.admin.round(r).leader
    assert leader is not None
    return c.site(leader).finalize(r, merged, outcomes(c, r, included, recovered))


def site_toml(tmp: Path, name: str, key: str, rpc_url: str, contract: str) -> Path:
    """A site.toml under tmp/name for the account of private `key` (keystore, passphrase, state dir), for
    the CLI commands that sign as a site."""
    keys = tmp / name / "keys"
    passphrase = keys / "passphrase"
    passphrase.parent.mkdir(parents=True)
    passphrase.write_text("test-passphrase\n")
    create_identity(
        keys / "account.json", keys / "curve.key", "test-passphrase", private_key=key, kdf_iterations=1000
    )
    cfg = SiteConfig(
        site=SiteSection(name=name, state_dir=tmp / name / "state", task=tmp / "swarm.toml"),
        identity=IdentitySection(
            keystore=keys / "account.json", passphrase_file=passphrase, curve_secret=keys / "curve.key"
        ),
        chain=ChainSection(rpc_url=rpc_url, contract=contract),
        transport=TransportSection(bind="tcp://127.0.0.1:1", endpoint="tcp://127.0.0.1:1"),
    )
    path = tmp / name / "site.toml"
    write_config(cfg, path)
    return path
