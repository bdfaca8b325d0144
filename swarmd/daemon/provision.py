"""Bringing sites onto a chain: deploy a task's ledger, join, and build a whole local consortium.

`local_consortium()` is what `swarm devnet up`, `scripts/demo`, the end-to-end tests and the
round benchmark share: a devnet, a deployed ledger, N sites with identities, configs, generated
non-IID data, joined and admitted.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account

from swarmd.config import (
    ChainSection,
    IdentitySection,
    MetricsSection,
    SiteConfig,
    SiteSection,
    TrainSection,
    TransportSection,
    with_chain,
    write_config,
)
from swarmd.errors import ConfigError, LedgerError, TaskError
from swarmd.fsutil import atomic_write_text
from swarmd.identity import SiteIdentity, create_identity, load_identity
from swarmd.ledger import DeployParams, Ledger, Member, MemberStatus
from swarmd.task import Task, load_task

DEV_KDF_ITERATIONS = 1000  # devnet keystores only: fast to unlock, not for production


def site_identity(cfg: SiteConfig) -> SiteIdentity:
    return load_identity(cfg.identity.keystore, cfg.identity.passphrase_file, cfg.identity.curve_secret)


def site_ledger(cfg: SiteConfig, identity: SiteIdentity | None = None) -> Ledger:
    """A Ledger client for this site's contract, signing with the site's key."""
    if not cfg.chain.contract:
        raise ConfigError("the site config has no chain.contract", hint="run `swarm join --contract 0x...`")
    ident = identity or site_identity(cfg)
    return Ledger(cfg.chain.rpc_url, cfg.chain.contract, ident.account, poa=cfg.chain.poa)


def initial_model_hash(task: Task) -> bytes:
    from swarmd.codec import content_hash  # torch: only deploy needs it, not join or admit
    from swarmd.train import initial_weights

    return content_hash(initial_weights(task))


def deploy_params(task: Task, *, majority: bool = False) -> DeployParams:
    s = task.swarm
    return DeployParams(
        task_hash=task.hash,
        initial_model_hash=initial_model_hash(task),
        min_peers=s.min_peers,
        commit_window=s.commit_window,
        leader_timeout=s.leader_timeout,
        majority_admission=majority or s.admission == "majority",
    )


def deploy_task(cfg: SiteConfig, *, majority: bool = False) -> Ledger:
    task = load_task(cfg.site.task)
    ident = site_identity(cfg)
    return Ledger.deploy(
        cfg.chain.rpc_url, ident.account, deploy_params(task, majority=majority), poa=cfg.chain.poa
    )


def check_task_binding(ledger: Ledger, task: Task) -> None:
    """Refuse to work for a ledger bound to another task (or another version of this one)."""
    bound = ledger.binding().task_hash
    if bound != task.hash:
        raise TaskError(
            f"the ledger at {ledger.address} is bound to task 0x{bound.hex()}, "
            f"but this site's task hashes to {task.hash_hex}",
            hint="every site must use the identical swarm.toml and bundle",
        )


def join_swarm(cfg: SiteConfig) -> Member:
    task = load_task(cfg.site.task)
    ident = site_identity(cfg)
    ledger = site_ledger(cfg, ident)
    check_task_binding(ledger, task)
    ledger.request_join(ident.curve.public_raw, cfg.transport.endpoint)
    return ledger.member(ident.address)


# --- a whole consortium on one machine ---------------------------------------------------------


@dataclass(frozen=True)
class LocalSite:
    name: str
    config: Path
    address: str
    data_list: Path


@dataclass(frozen=True)
class LocalConsortium:
    root: Path
    rpc_url: str
    contract: str
    task: Path
    test_list: Path
    sites: tuple[LocalSite, ...]

    def save(self) -> Path:
        doc = asdict(self)
        return atomic_write_text(self.root / "consortium.json", json.dumps(doc, indent=2, default=str))

    @classmethod
    def load(cls, root: Path) -> LocalConsortium:
        path = root / "consortium.json"
        try:
            doc = json.loads(path.read_text())
            sites = tuple(
                LocalSite(s["name"], Path(s["config"]), s["address"], Path(s["data_list"]))
                for s in doc["sites"]
            )
            return cls(
                Path(doc["root"]),
                doc["rpc_url"],
                doc["contract"],
                Path(doc["task"]),
                Path(doc["test_list"]),
                sites,
            )
        except FileNotFoundError:
            raise ConfigError(f"no local consortium in {root}", hint="run `swarm devnet up` first") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is unreadable: {exc}") from None


def _site_config(
    root: Path, name: str, task: Path, data_list: Path, eval_list: Path, rpc_url: str, port: int
) -> SiteConfig:
    keys = root / name / "keys"
    return SiteConfig(
        site=SiteSection(
            name=name, state_dir=root / name / "state", task=task, data_list=data_list, eval_list=eval_list
        ),
        identity=IdentitySection(
            keystore=keys / "account.json",
            passphrase_file=keys / "passphrase",
            curve_secret=keys / "curve.key",
        ),
        chain=ChainSection(rpc_url=rpc_url, poll_interval=0.25),
        transport=TransportSection(bind=f"tcp://127.0.0.1:{port}", endpoint=f"tcp://127.0.0.1:{port}"),
        train=TrainSection(device="cpu", threads=1),
        metrics=MetricsSection(bind=f"127.0.0.1:{port + 2}"),
    )


def local_consortium(
    root: Path,
    *,
    rpc_url: str,
    dev_keys: list[str],
    task_path: Path,
    sites: int = 3,
    alpha: float = 0.5,
    seed: int = 0,
    n_per_site: int = 48,
    n_test: int = 64,
    base_port: int = 0,
    data_task: str = "classification",
) -> LocalConsortium:
    """Deploy, provision and admit `sites` sites under `root`.

    dev_keys[0] deploys and admits; dev_keys[1:] become the sites' accounts."""
    from swarmd.train.demodata import generate_demo_data

    if len(dev_keys) < sites + 1:
        raise ConfigError(f"need {sites + 1} funded dev keys, have {len(dev_keys)}")
    root = root.resolve()
    task = load_task(task_path)
    admin = Account.from_key(dev_keys[0])
    ledger = Ledger.deploy(rpc_url, admin, deploy_params(task))
    data = generate_demo_data(
        root / "data",
        sites=sites,
        task=data_task,
        alpha=alpha,
        seed=seed,
        n_per_site=n_per_site,
        n_test=n_test,
    )
    ports = _free_ports(sites) if base_port == 0 else [base_port + 3 * i for i in range(sites)]
    out: list[LocalSite] = []
    for i in range(sites):
        name = f"site-{chr(ord('a') + i)}"
        cfg = _site_config(
            root, name, task_path.resolve(), data.site_datalists[i], data.test_datalist, rpc_url, ports[i]
        )
        pw = secrets.token_urlsafe(16)
        atomic_write_text(cfg.identity.passphrase_file, pw + "\n", mode=0o600)
        ident = create_identity(
            cfg.identity.keystore,
            cfg.identity.curve_secret,
            pw,
            private_key=dev_keys[i + 1],
            kdf_iterations=DEV_KDF_ITERATIONS,
        )
        cfg_path = write_config(with_chain(cfg, contract=ledger.address), root / name / "site.toml")
        site_ledger(with_chain(cfg, contract=ledger.address), ident).request_join(
            ident.curve.public_raw, cfg.transport.endpoint
        )
        ledger.admit(ident.address)
        if ledger.member(ident.address).status != MemberStatus.ACTIVE:
            raise LedgerError(f"{name} was not admitted")
        out.append(LocalSite(name, cfg_path, ident.address, data.site_datalists[i]))
    consortium = LocalConsortium(
        root, rpc_url, ledger.address, task_path.resolve(), data.test_datalist, tuple(out)
    )
    consortium.save()
    return consortium


def _free_ports(n: int) -> list[int]:
    """n ports p with p+1 (the transport's bulk port) and p+2 (Prometheus) free too."""
    import socket

    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            held.append(a)
            port = a.getsockname()[1]
            neighbours = [socket.socket() for _ in range(2)]
            try:
                for k, b in enumerate(neighbours, start=1):
                    b.bind(("127.0.0.1", port + k))
            except OSError:
                for b in neighbours:
                    b.close()
                continue
            held += neighbours
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports
