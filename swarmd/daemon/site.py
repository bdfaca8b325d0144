"""This site's standing on its chain, as the running daemon needs it: its identity, a Ledger client
that signs with it, and the check that the ledger is bound to this site's task."""

from __future__ import annotations

from swarmd.config import SiteConfig
from swarmd.errors import ConfigError, TaskError
from swarmd.identity import SiteIdentity, load_identity
from swarmd.ledger import Ledger
from swarmd.task import Task


def site_identity(cfg: SiteConfig) -> SiteIdentity:
    """The site's keys, unlocked with its passphrase file."""
    return load_identity(cfg.identity.keystore, cfg.identity.passphrase_file, cfg.identity.curve_secret)


def site_ledger(cfg: SiteConfig, identity: SiteIdentity | None = None) -> Ledger:
    """A Ledger client for this site's contract, signing with the site's key."""
    if not cfg.chain.contract:
        raise ConfigError("the site config has no chain.contract", hint="run `swarm join --contract 0x...`")
    ident = identity or site_identity(cfg)
    return Ledger(cfg.chain.rpc_url, cfg.chain.contract, ident.account, poa=cfg.chain.poa)


def check_task_binding(ledger: Ledger, task: Task) -> None:
    """Refuse to work for a ledger bound to another task (or another version of this one)."""
    bound = ledger.binding().task_hash
    if bound != task.hash:
        raise TaskError(
            f"the ledger at {ledger.address} is bound to task 0x{bound.hex()}, "
            f"but this site's task hashes to {task.hash_hex}",
            hint="every site must use the identical swarm.toml and bundle",
        )
