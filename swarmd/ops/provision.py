"""Bringing one site onto a chain: create its identity and site.toml, deploy a task's ledger, join.

`create_site` is the one place a site comes into being: `swarm init` and every site of a local
consortium go through it. `deploy_task` makes the deploying site a member too (it asks to join and
admits itself), unless it is an admin-only account.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from swarmd.config import (
    ChainSection,
    IdentitySection,
    SiteConfig,
    SiteSection,
    TransportSection,
    validate_config,
    write_config,
)
from swarmd.daemon.site import check_task_binding, site_identity, site_ledger
from swarmd.errors import ConfigError, IdentityError, TaskError
from swarmd.fsutil import atomic_write_text
from swarmd.identity import SiteIdentity, create_identity
from swarmd.ledger import DeployParams, Ledger, Member
from swarmd.task import Task, load_task

DEV_KDF_ITERATIONS = 1000  # devnet keystores only: fast to unlock, not for production


@dataclass(frozen=True)
class NewSite:
    """What `create_site` wrote."""

    config: SiteConfig
    path: Path  # the site.toml
    identity: SiteIdentity
    generated_passphrase: bool  # a random passphrase was written into config.identity.passphrase_file


def site_config(
    directory: Path,
    name: str,
    task: Path,
    *,
    rpc_url: str,
    bind: str,
    endpoint: str,
    ws_url: str = "",
    data_list: Path | None = None,
    eval_list: Path | None = None,
    state_dir: Path | None = None,
    passphrase_file: Path | None = None,
) -> SiteConfig:
    """A site's config with the standard layout under `directory`: keys/ and state/."""
    directory = directory.resolve()
    keys = directory / "keys"
    return SiteConfig(
        site=SiteSection(
            name=name,
            state_dir=(state_dir or directory / "state").resolve(),
            task=task.resolve(),
            data_list=data_list.resolve() if data_list else None,
            eval_list=eval_list.resolve() if eval_list else None,
        ),
        identity=IdentitySection(
            keystore=keys / "account.json",
            passphrase_file=(passphrase_file or keys / "passphrase").resolve(),
            curve_secret=keys / "curve.key",
        ),
        chain=ChainSection(rpc_url=rpc_url, ws_url=ws_url),
        transport=TransportSection(bind=bind, endpoint=endpoint),
    )


def create_site(
    cfg: SiteConfig, path: Path, *, private_key: str | None = None, kdf_iterations: int | None = None
) -> NewSite:
    """Create the site `cfg` describes: its identity (Ethereum keystore + CURVE keypair) and `path`.

    Refuses an existing site.toml or key. A missing passphrase file gets a random passphrase (0600);
    `private_key` imports that account instead of generating one."""
    validate_config(cfg)  # a bad --rpc or --endpoint fails here, not at the next load of the file
    load_task(cfg.site.task)  # fail early on a bad task file
    if path.exists():
        raise ConfigError(f"{path} already exists", hint="use another --dir, or remove it on purpose")
    pass_path = cfg.identity.passphrase_file
    generated = not pass_path.exists()
    if generated:
        atomic_write_text(pass_path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    try:
        passphrase = pass_path.read_text().strip()
    except OSError as exc:
        raise IdentityError(f"cannot read {pass_path}: {exc.strerror}") from None
    ident = create_identity(
        cfg.identity.keystore,
        cfg.identity.curve_secret,
        passphrase,
        private_key=private_key,
        kdf_iterations=kdf_iterations,
    )
    return NewSite(cfg, write_config(cfg, path), ident, generated)


def read_private_key(path: Path) -> str:
    """A hex private key from a file (`swarm init --private-key-file`)."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from None


def initial_model_hash(task: Task) -> bytes:
    from swarmd.codec import content_hash  # torch: only deploy needs it, not join or admit
    from swarmd.train import initial_model

    return content_hash(initial_model(task))  # without FedBN's local layers: they never leave a site


class AdmissionMismatch(TaskError):
    """The deploy asked for another admission rule than the task's `swarm.admission`: the task hash would
    record one rule while the chain runs the other."""


def admission_majority(task: Task, majority: bool | None) -> bool:
    """Whether the ledger admits by majority: the task's rule; `majority` (a deploy flag) may only agree."""
    wanted = task.swarm.admission == "majority"
    if majority is not None and majority != wanted:
        flag = "--majority" if majority else "--admin"
        raise AdmissionMismatch(
            f"deploy {flag} disagrees with the task's admission = {task.swarm.admission!r}",
            hint=f"drop {flag} (the task decides), or set swarm.admission in the task and deploy that",
        )
    return wanted


def deploy_params(task: Task, *, majority: bool | None = None) -> DeployParams:
    """What the ledger is deployed with; first, a task no site could train privately is refused, and a
    `majority` flag that disagrees with the task's admission rule (AdmissionMismatch)."""
    from swarmd.train import check_private

    majority_admission = admission_majority(task, majority)
    check_private(task)
    s = task.swarm
    return DeployParams(
        task_hash=task.hash,
        initial_model_hash=initial_model_hash(task),
        min_peers=s.min_peers,
        commit_window=s.commit_window,
        leader_timeout=s.leader_timeout,
        reveal_window=s.reveal_window,
        majority_admission=majority_admission,
        secure_aggregation=task.privacy.secure_aggregation,
    )


@dataclass(frozen=True)
class Deployed:
    """What `deploy_task` did: the ledger, and the deploying site's own record (None: admin-only)."""

    ledger: Ledger
    member: Member | None


def deploy_task(cfg: SiteConfig, *, majority: bool | None = None, join: bool = True) -> Deployed:
    """Deploy a ledger bound to this site's task, with this site's account as admin; unless `join` is
    False (an admin-only account), the site then asks to join and admits itself, so the lead trains too.

    Self-admission works in both modes: in majority mode the admin decides alone until `min_peers`
    members are active (the contract's bootstrap), and the deployer is the first of them."""
    task = load_task(cfg.site.task)
    ident = site_identity(cfg)
    params = deploy_params(task, majority=majority)
    ledger = Ledger.deploy(cfg.chain.rpc_url, ident.account, params, poa=cfg.chain.poa)
    if not join:
        return Deployed(ledger, None)
    ledger.request_join(ident.curve.public_raw, cfg.transport.endpoint, cfg.site.name)
    ledger.admit(ident.address)
    return Deployed(ledger, ledger.member(ident.address))


def join_swarm(cfg: SiteConfig) -> Member:
    """Ask to join the site's ledger: publish its CURVE key, endpoint and name."""
    task = load_task(cfg.site.task)
    ident = site_identity(cfg)
    ledger = site_ledger(cfg, ident)
    check_task_binding(ledger, task)
    ledger.request_join(ident.curve.public_raw, cfg.transport.endpoint, cfg.site.name)
    return ledger.member(ident.address)
