"""The one place that constructs and wires the subsystems: `Daemon` (startup, main loop, shutdown).

Bad local state (a corrupt journal or checkpoint, a missing initial model, a full disk) never stops
the daemon: it is moved aside, reported in `DaemonState.problems` and repaired from the chain and
from peers, so that systemd never sees a crash loop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from swarmd.compress import Encoding
from swarmd.config import SiteConfig
from swarmd.daemon import notify
from swarmd.daemon.control import ControlServer
from swarmd.daemon.faults import Fault
from swarmd.daemon.leader import HandlerSlot
from swarmd.daemon.lifecycle import settle_heap
from swarmd.daemon.metrics import Metrics, start_metrics_server
from swarmd.daemon.reach import advertised_check, make_transport, peer_paths
from swarmd.daemon.rounds import RoundDriver, StopRequested
from swarmd.daemon.site import check_task_binding, site_budget, site_identity, site_ledger
from swarmd.daemon.state import DaemonState, Phase
from swarmd.daemon.store import JOURNAL_PROBLEM, Journal, ModelStore
from swarmd.errors import ConfigError, StoreError
from swarmd.task import load_task
from swarmd.train.residual import UpdateCompressor
from swarmd.transport import Node

if TYPE_CHECKING:
    from swarmd.daemon.metrics import MetricsServer

log = logging.getLogger("swarmd.app")


class Daemon:
    def __init__(self, cfg: SiteConfig, faults: frozenset[Fault] = frozenset()) -> None:
        self.cfg = cfg
        self.faults = faults  # test-only misbehaviour, checked by `swarmd run` (see `faults`)
        self.driver: RoundDriver | None = None
        self.node: Node | None = None
        self.control: ControlServer | None = None
        self.metrics_server: MetricsServer | None = None
        self._stop = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self.state: DaemonState | None = None

    async def startup(self) -> None:
        from swarmd.train import BundleTrainer, LocalLayersTrainer, Trainer

        cfg = self.cfg
        if cfg.site.data_list is None:
            raise ConfigError("site.data_list is not set", hint="point it at this site's datalist JSON")
        task = load_task(cfg.site.task)
        ident = site_identity(cfg)
        ledger = site_ledger(cfg, ident)
        state_dir = cfg.site.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(check_task_binding, ledger, task)
        self.state = DaemonState(site=cfg.site.name, address=ident.address, rounds_total=task.swarm.rounds)
        metrics = Metrics()
        trainer = BundleTrainer(
            task,
            cfg.site.data_list,
            device=cfg.train.device,
            amp=cfg.train.amp,
            threads=cfg.train.threads,
            workdir=state_dir / "work",
            name=cfg.site.name,
        )
        await asyncio.to_thread(trainer.initialize)
        site_trainer: Trainer = trainer
        if task.swarm.local_layers:  # FedBN: the rounds see only the shared layers
            site_trainer = await asyncio.to_thread(LocalLayersTrainer, trainer, task, state_dir)
        handler = HandlerSlot()
        self.node = make_transport(cfg.transport, ident, handler, task.swarm.max_update_bytes)
        self.driver = RoundDriver(
            task=task,
            ledger=ledger,
            node=self.node,
            trainer=site_trainer,
            store=ModelStore(state_dir / "checkpoints", problems=self.state.problems),
            journal=Journal.recover(state_dir / "journal.json", self.state.problems),
            state=self.state,
            metrics=metrics,
            poll_interval=cfg.chain.poll_interval,
            eval_list=cfg.site.eval_list,
            heads_url=cfg.chain.ws_url,
        )
        self.driver.setup_secure(state_dir)
        self.driver.faults = self.faults
        self.driver.budget = await asyncio.to_thread(site_budget, task, trainer, state_dir)
        if task.exchange.compression != "none":
            self.driver.compressor = UpdateCompressor(Encoding.of(task.exchange), state_dir, task.hash)
        handler.bind(self.driver)
        # The member list before the sockets: a peer that reconnects the moment we listen (we restarted)
        # is checked against it at its handshake; bound first, we refused every member until we had read it.
        await self.driver.refresh_members()  # this site's standing is known, and logged, from the start
        await self.node.start()
        advertised_check(cfg.transport, self.node)
        self.control = ControlServer(cfg.control_socket, self.state.snapshot)
        await self.control.start()
        self.metrics_server = start_metrics_server(cfg.metrics.bind, metrics)
        frozen = settle_heap()
        log.debug("%d objects from start-up frozen out of the cyclic collector's scans", frozen)
        notify.ready()
        self._watchdog = asyncio.ensure_future(self._watchdog_loop())
        log.info("swarmd up: site %s account %s at %s", cfg.site.name, ident.address, cfg.transport.endpoint)

    async def main_loop(self) -> None:
        driver = self.driver
        if driver is None:
            return
        try:
            await self._prepare(driver)
            await driver.run()
        except StopRequested:
            log.info(
                "stopping at a safe point (round %s, %s)",
                self.state and self.state.round,
                self.state and self.state.phase.value,
            )

    async def _prepare(self, driver: RoundDriver) -> None:
        """Before the first round: the initial model, the journal resynced if it was lost, the
        baseline score. Bad local state is repaired or waited out here, never a reason to exit."""
        while True:
            try:
                initial = await driver.ensure_initial_model()
                # Every update has exactly the initial model's tensors: a manifest with more is refused
                # before it is validated, and the control socket's frame limit shrinks to fit.
                # A compressed update lists its side tensors (scales, indices) and its encoding too.
                most = Encoding.of(driver.task.exchange).max_tensors(len(initial))
                driver.node.set_limits(dataclasses.replace(driver.node.limits, max_tensors=most))
                if JOURNAL_PROBLEM in driver.state.problems:
                    await driver.resync_journal()
                await driver.evaluate_baseline(initial)
                return
            except StoreError as exc:  # e.g. the disk is full: reported by the store; retry
                log.error("preparing the first round: %s: %s; retrying", type(exc).__name__, exc)
                await driver.sleep(2.0)

    def request_stop(self) -> None:
        self._stop.set()
        if self.driver is not None:
            self.driver.stopping.set()

    async def shutdown(self) -> None:
        notify.stopping()
        if self.state is not None:
            self.state.enter(Phase.STOPPING)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.control is not None:
            await self.control.stop()
        if self.node is not None:
            await self.node.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.driver is not None:
            self.driver.trainer.abort()
            self.driver.close()

    async def _watchdog_loop(self) -> None:
        """Keep systemd's watchdog fed and its STATUS line current; mirror the transport's counters
        (bytes, and what it refused: `swarmd_rejections_total{reason}`)."""
        interval = notify.watchdog_interval()
        period = min(interval / 2, 2.0) if interval else 2.0
        seen = {"in": 0, "out": 0}
        rejected: dict[str, int] = {}
        while True:
            if interval:
                notify.watchdog()
            if self.state is not None:
                notify.status(f"round {self.state.round} {self.state.phase.value}")
            if self.node is not None and self.driver is not None:
                stats = self.node.stats
                for direction, total in (("in", stats.bytes_in), ("out", stats.bytes_out)):
                    self.driver.metrics.transport_hook(direction, total - seen[direction])
                    seen[direction] = total
                rejected = self.driver.metrics.transport_rejections(stats.rejections, rejected)
                if paths := peer_paths(self.node):
                    self.state.peer_paths = paths  # type: ignore[union-attr]
                    self.driver.metrics.peer_paths(paths)
            await asyncio.sleep(period)


def run(cfg: SiteConfig, faults: frozenset[Fault] = frozenset()) -> int:
    from swarmd.daemon.lifecycle import serve

    return asyncio.run(serve(Daemon(cfg, faults)))
