"""`local_swarm()`: anvil, a provisioned local consortium and its daemons, started and stopped as one.

`swarm devnet up | run`, the end-to-end tests and the round benchmark all run a swarm this way; what
differs between them is a parameter (sites, block time, generated data (`DemoData`) or each site's own
datalist (`OwnData`), whether daemons start, whether the swarm outlives the `with`, whether it is
recorded in its directory for `swarm devnet down`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from swarmd.errors import DaemonError, DevnetError, StoreError
from swarmd.ledger import Devnet, Ledger
from swarmd.ops.consortium import LocalConsortium, local_consortium
from swarmd.ops.launcher import DaemonProcess, start_forkserver, stop_all, wait_until
from swarmd.ops.taskedit import derived_task

# A recorded swarm's chain lives in this anvil state file in its root; anvil rewrites it every
# STATE_INTERVAL_S seconds and on a clean stop, so `devnet down`/`up` and a killed anvil keep the ledger.
CHAIN_STATE = "chain-state.json"
STATE_INTERVAL_S = 1.0

Status = dict[str, Any] | None  # a daemon's control-socket status; None while it is not answering


@dataclass(frozen=True)
class DemoData:
    """The generated non-IID data each site trains on (see `train.demodata`)."""

    alpha: float = 0.5  # Dirichlet label skew: small = skewed
    seed: int = 0
    n_per_site: int = 48
    n_test: int = 64
    task: str = "classification"


@dataclass(frozen=True)
class OwnData:
    """Each site's own training datalist, by site name, and an optional shared held-out test datalist.

    Without `test`, a site scores the merged models on the 'validation' section of its own list.
    Build one with `own_data()` (ops/sitedata.py), which validates every list first."""

    datalists: Mapping[str, Path]
    test: Path | None = None

    @property
    def sites(self) -> int:
        return len(self.datalists)


@dataclass
class LocalSwarm:
    """A running local swarm: its chain, its consortium and one daemon process per site."""

    devnet: Devnet
    consortium: LocalConsortium
    daemons: list[DaemonProcess]
    ledger: Ledger
    record: Path | None = field(default=None, repr=False)  # daemons.json, for `swarm devnet down`

    def daemon(self, address: str) -> DaemonProcess:
        site = next(s for s in self.consortium.sites if s.address == address)
        return next(d for d in self.daemons if d.name == site.name)

    def start(self) -> None:
        """Start every daemon (and record their pids when the swarm is recorded)."""
        for d in self.daemons:
            d.start()
        if self.record is not None:
            self.record.write_text(json.dumps({"pids": [d.pid for d in self.daemons]}))

    def statuses(self) -> list[Status]:
        return [d.status() for d in self.daemons]

    def wait_done(
        self, timeout: float, *, interval: float = 0.5, on_poll: Callable[[list[Status]], None] | None = None
    ) -> None:
        """Until every started daemon reports phase `done`; DaemonError when one exits or on timeout.

        `on_poll` sees every poll's statuses (a progress display)."""

        def done() -> bool:
            dead = [d for d in self.daemons if d.proc is not None and not d.alive()]
            if dead:
                raise DaemonError(f"daemon {dead[0].name} exited; its log ends:\n{dead[0].tail(60)}")
            statuses = self.statuses()
            if on_poll is not None:
                on_poll(statuses)
            return all(st and st["phase"] == "done" for st in statuses)

        wait_until(done, timeout, interval, what="every site to finish its rounds")

    def tails(self, lines: int = 80) -> str:
        """Each daemon's last log lines, under its name."""
        return "\n".join(f"==== {d.name}\n{d.tail(lines)}" for d in self.daemons)

    def stop(self, timeout: float = 20.0) -> list[int | None]:
        """Stop every daemon in parallel (SIGTERM, SIGKILL after `timeout`); forget their pids."""
        codes = stop_all(self.daemons, timeout=timeout)
        if self.record is not None:
            self.record.unlink(missing_ok=True)
        return codes


def recorded_devnet(root: Path) -> Devnet | None:
    """The devnet recorded in `root` by a kept or recorded `local_swarm`, when it is still up."""
    path = root / "devnet.json"
    if not path.exists():
        return None
    dev = Devnet.load(path)
    return dev if dev.is_running() else None


def task_file(
    path: Path,
    *,
    name: str,
    bundle: Path,
    seed: int,
    swarm: Mapping[str, Any],
    privacy: Mapping[str, Any] | None = None,
    exchange: Mapping[str, Any] | None = None,
) -> Path:
    """Write a swarm.toml: the [task] table and the given [swarm] (and [privacy], [exchange]) settings."""
    lines = ["[task]", f"name = {json.dumps(name)}", f"bundle = {json.dumps(str(bundle))}", f"seed = {seed}"]
    lines += ["", "[swarm]", *(f"{k} = {json.dumps(v)}" for k, v in swarm.items())]
    if privacy:
        lines += ["", "[privacy]", *(f"{k} = {json.dumps(v)}" for k, v in privacy.items())]
    if exchange:
        lines += ["", "[exchange]", *(f"{k} = {json.dumps(v)}" for k, v in exchange.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def private_task(src: Path, out: Path, privacy: Mapping[str, Any]) -> Path:
    """The task `src` with its [privacy] table replaced (what `swarm devnet run --secure-aggregation`
    runs); every other table of `src` is kept as written (see ops/taskedit.py)."""
    return derived_task(src, out, privacy=privacy)


@contextlib.contextmanager
def local_swarm(
    root: Path,
    task: Path,
    *,
    sites: int = 3,
    block_time: float | None = None,
    data: DemoData | OwnData = DemoData(),
    start: bool = True,
    keep: bool = False,
    record: bool = False,
    chain_state: Path | None = None,
    stop_timeout: float = 20.0,
    private_sites: int = 0,
    fork: bool = False,
) -> Iterator[LocalSwarm]:
    """Anvil, `sites` sites provisioned under `root` for `task`, and their daemons; all stopped on exit.

    `data`: generated data for `sites` sites (DemoData), or each site's own datalist (OwnData: one
    site per list, named by its key; `sites` is then ignored).

    Provisioning mines instantly whatever `block_time` the chain then runs at. `start=False` leaves
    the daemons to `LocalSwarm.start()`. `keep`: anvil runs detached, and it and the daemons outlive
    the `with` (a failed provisioning still stops anvil). `record`: the devnet and the daemons' pids
    are recorded in `root` (devnet.json, daemons.json, anvil.log, the chain in CHAIN_STATE) for
    `swarm devnet down`; a devnet already recorded there and up is used with its consortium (and is
    left running), and one recorded but down (stopped, or anvil killed) is started again from its
    saved chain. `chain_state`: anvil's state file, so the chain survives a restart. `private_sites`:
    the last N sites accept no connection and are reached through a relay on site 0 (ops/p2pnet.py).
    `fork`: the daemons are forked from a forkserver that imported their libraries once (ops/launcher.py),
    which starts now, beside the chain and the provisioning; ignored with `keep`."""
    root = root.resolve()
    fork = fork and not keep  # a forkserver's daemons do not outlive this process
    if fork:
        start_forkserver()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the swarm directory {root}: {exc.strerror or exc}") from None
    if record and chain_state is None:
        chain_state = root / CHAIN_STATE
    reused = recorded_devnet(root) if record else None
    if reused is not None:
        dev, consortium = reused, LocalConsortium.load(root)
    elif record and (root / "consortium.json").exists():
        dev, consortium = _restart(root, block_time, keep, chain_state or root / CHAIN_STATE)
    else:
        if record and chain_state is not None:
            chain_state.unlink(missing_ok=True)  # without a consortium it is a failed provisioning's chain
        dev, consortium = _provision(
            root, task, sites, block_time, data, keep, record, chain_state, private_sites
        )
    daemons = [
        DaemonProcess(s.name, s.config, s.config.parent / "swarmd.log", fork=fork) for s in consortium.sites
    ]
    swarm = LocalSwarm(
        dev,
        consortium,
        daemons,
        Ledger(dev.rpc_url, consortium.contract),
        root / "daemons.json" if record else None,
    )
    try:
        if start:
            swarm.start()
        yield swarm
    finally:
        if not keep:
            swarm.stop(stop_timeout)
            if reused is None:
                dev.stop()


def _provision(
    root: Path,
    task: Path,
    sites: int,
    block_time: float | None,
    data: DemoData | OwnData,
    keep: bool,
    record: bool,
    chain_state: Path | None,
    private_sites: int = 0,
) -> tuple[Devnet, LocalConsortium]:
    if isinstance(data, OwnData):
        sites = data.sites
    dev = Devnet.start(
        block_time=block_time,
        accounts=max(10, sites + 4),
        state_file=chain_state,
        state_interval=STATE_INTERVAL_S if chain_state is not None else None,
        detach=keep,
        log_file=root / "anvil.log" if record else None,
    )
    try:
        if record:
            dev.save(root / "devnet.json")
        with dev.mining_instantly():
            if isinstance(data, OwnData):
                consortium = local_consortium(
                    root,
                    rpc_url=dev.rpc_url,
                    dev_keys=list(dev.dev_keys),
                    task_path=task,
                    datalists=data.datalists,
                    test_list=data.test,
                    private_sites=private_sites,
                )
            else:
                consortium = local_consortium(
                    root,
                    rpc_url=dev.rpc_url,
                    dev_keys=list(dev.dev_keys),
                    task_path=task,
                    sites=sites,
                    alpha=data.alpha,
                    seed=data.seed,
                    n_per_site=data.n_per_site,
                    n_test=data.n_test,
                    data_task=data.task,
                    private_sites=private_sites,
                )
    except BaseException:
        dev.stop()
        raise
    return dev, consortium


def _restart(root: Path, block_time: float | None, keep: bool, state: Path) -> tuple[Devnet, LocalConsortium]:
    """anvil again, from the chain a recorded swarm saved, on the port its sites' configs name."""
    if not state.exists():
        raise DevnetError(
            f"{root} holds a consortium but no saved chain ({state.name})",
            hint=f"remove {root} (or use another --dir) to provision a new devnet",
        )
    consortium = LocalConsortium.load(root)
    port = urlsplit(consortium.rpc_url).port
    dev = Devnet.start(
        port=port,
        block_time=block_time,
        accounts=max(10, len(consortium.sites) + 4),
        state_file=state,
        state_interval=STATE_INTERVAL_S,
        detach=keep,
        log_file=root / "anvil.log",
    )
    try:
        dev.save(root / "devnet.json")
        Ledger(dev.rpc_url, consortium.contract).check()  # UnknownContract: the saved chain lacks it
    except BaseException:
        dev.stop()
        raise
    return dev, consortium


__all__ = [
    "CHAIN_STATE",
    "DemoData",
    "LocalSwarm",
    "OwnData",
    "local_swarm",
    "private_task",
    "recorded_devnet",
    "task_file",
]
