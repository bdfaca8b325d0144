"""A whole consortium on one machine: a deployed ledger and N sites with identities, configs and
data (generated non-IID data, or each site's own datalist), joined and admitted. `local_swarm()`
(ops/local.py) runs their daemons."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account

from swarmd.config import MetricsSection, TrainSection, with_chain
from swarmd.daemon.site import site_ledger
from swarmd.errors import ConfigError, LedgerError
from swarmd.fsutil import atomic_write_text
from swarmd.ledger import Ledger, MemberStatus
from swarmd.ledger.devnet import anvil_ws_url, free_port, free_ports
from swarmd.ops.p2pnet import p2p_transports
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
    test_list: Path | None  # the shared held-out datalist; None: each site scores on its own validation
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
                Path(doc["test_list"]) if doc["test_list"] else None,
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
    datalists: Mapping[str, Path] | None = None,
    test_list: Path | None = None,
    hosts: Sequence[str] = (),
    private_sites: int = 0,
) -> LocalConsortium:
    """Deploy, provision and admit sites under `root`.

    The sites train on `datalists` (one site per list, named by its key; `test_list` is the shared
    held-out set, if any) or, without them, on `sites` sites' generated `data_task` data.
    dev_keys[0] deploys and admits; dev_keys[1:] become the sites' accounts. `hosts`: the address site i
    binds and advertises (default 127.0.0.1 for all; the WAN bench gives each its namespace's address).
    `private_sites`: the last N sites are reachable only through a relay on site 0 (ops/p2pnet.py)."""
    n = len(datalists) if datalists is not None else sites
    if len(dev_keys) < n + 1:
        raise ConfigError(f"need {n + 1} funded dev keys, have {len(dev_keys)}")
    if hosts and len(hosts) != n:
        raise ConfigError(f"{len(hosts)} hosts for {n} sites", hint="give one host per site, or none")
    root = root.resolve()
    task = load_task(task_path)
    admin = Account.from_key(dev_keys[0])
    ledger = Ledger.deploy(rpc_url, admin, deploy_params(task))
    if datalists is None:
        datalists, test_list = _generate(root / "data", sites, data_task, alpha, seed, n_per_site, n_test)
    ports = free_ports(n, width=3) if base_port == 0 else [base_port + 3 * i for i in range(n)]
    reach = (
        [{} for _ in range(n)]
        if not private_sites
        else p2p_transports(
            dev_keys[1 : n + 1], list(hosts) or ["127.0.0.1"] * n, ports, free_port(), private_sites
        )
    )
    out: list[LocalSite] = []
    for i, (name, data_list) in enumerate(datalists.items()):
        endpoint = f"tcp://{hosts[i] if hosts else '127.0.0.1'}:{ports[i]}"
        cfg = site_config(
            root / name,
            name,
            task_path,
            rpc_url=rpc_url,
            bind=endpoint,
            endpoint=endpoint,
            data_list=data_list,
            eval_list=test_list,
        )
        cfg = dataclasses.replace(
            with_chain(cfg, contract=ledger.address, poll_interval=0.25, ws_url=anvil_ws_url(rpc_url)),
            train=TrainSection(device="cpu", threads=1),
            metrics=MetricsSection(bind=f"127.0.0.1:{ports[i] + 2}"),
            transport=dataclasses.replace(cfg.transport, **reach[i]),
        )
        endpoint = cfg.transport.endpoint
        new = create_site(
            cfg, root / name / "site.toml", private_key=dev_keys[i + 1], kdf_iterations=DEV_KDF_ITERATIONS
        )
        site_ledger(cfg, new.identity).request_join(new.identity.curve.public_raw, endpoint, name)
        ledger.admit(new.identity.address)
        if ledger.member(new.identity.address).status != MemberStatus.ACTIVE:
            raise LedgerError(f"{name} was not admitted")
        out.append(LocalSite(name, new.path, new.identity.address, cfg.site.data_list or data_list))
    test = test_list.resolve() if test_list is not None else None
    consortium = LocalConsortium(root, rpc_url, ledger.address, task_path.resolve(), test, tuple(out))
    consortium.save()
    return consortium


def _generate(
    out: Path, sites: int, task: str, alpha: float, seed: int, n_per_site: int, n_test: int
) -> tuple[dict[str, Path], Path]:
    """`sites` sites' generated datalists, named site-a, site-b, ..., and the shared test datalist."""
    from swarmd.train.demodata import generate_demo_data

    data = generate_demo_data(
        out, sites=sites, task=task, alpha=alpha, seed=seed, n_per_site=n_per_site, n_test=n_test
    )
    names = [f"site-{chr(ord('a') + i)}" for i in range(sites)]
    return dict(zip(names, data.site_datalists, strict=True)), data.test_datalist
