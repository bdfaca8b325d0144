"""A whole consortium on one machine: a deployed ledger and N sites with identities, configs and
generated non-IID data, joined and admitted. `local_swarm()` (ops/local.py) runs their daemons."""

from __future__ import annotations

import dataclasses
import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account

from swarmd.config import MetricsSection, TrainSection, with_chain
from swarmd.daemon.site import site_ledger
from swarmd.errors import ConfigError, LedgerError
from swarmd.fsutil import atomic_write_text
from swarmd.ledger import Ledger, MemberStatus
from swarmd.ops.provision import DEV_KDF_ITERATIONS, create_site, deploy_params, site_config
from swarmd.task import load_task


@dataclass(frozen=True)
class LocalSite:
    """One provisioned site: its site.toml, its account and its training datalist."""

    name: str
    config: Path
    address: str
    data_list: Path

    @property
    def journal(self) -> Path:
        """Where this site's daemon keeps its journal (the standard layout of `site_config`)."""
        return self.config.parent / "state" / "journal.json"


@dataclass(frozen=True)
class LocalConsortium:
    """What `local_consortium` built, recorded in root/consortium.json for later commands."""

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
        endpoint = f"tcp://127.0.0.1:{ports[i]}"
        cfg = site_config(
            root / name,
            name,
            task_path,
            rpc_url=rpc_url,
            bind=endpoint,
            endpoint=endpoint,
            data_list=data.site_datalists[i],
            eval_list=data.test_datalist,
        )
        cfg = dataclasses.replace(
            with_chain(cfg, contract=ledger.address, poll_interval=0.25),
            train=TrainSection(device="cpu", threads=1),
            metrics=MetricsSection(bind=f"127.0.0.1:{ports[i] + 2}"),
        )
        new = create_site(
            cfg, root / name / "site.toml", private_key=dev_keys[i + 1], kdf_iterations=DEV_KDF_ITERATIONS
        )
        site_ledger(cfg, new.identity).request_join(new.identity.curve.public_raw, endpoint, name)
        ledger.admit(new.identity.address)
        if ledger.member(new.identity.address).status != MemberStatus.ACTIVE:
            raise LedgerError(f"{name} was not admitted")
        out.append(LocalSite(name, new.path, new.identity.address, data.site_datalists[i]))
    consortium = LocalConsortium(
        root, rpc_url, ledger.address, task_path.resolve(), data.test_datalist, tuple(out)
    )
    consortium.save()
    return consortium


def _free_ports(n: int) -> list[int]:
    """n ports p with p+1 (the transport's bulk port) and p+2 (Prometheus) free too."""
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
