"""Prometheus metrics of one daemon, on a private registry, and the HTTP endpoint that serves them.

`Metrics` owns every metric the daemon exports; the round driver and the transport call its small
methods (`observe_phase`, `rejection`, ...) and never touch prometheus-client themselves. The
registry is private so that several daemons, or tests, can live in one process.
`start_metrics_server("host:port", metrics)` serves it (an empty bind disables it), and the
returned `MetricsServer` is stopped by the daemon's shutdown.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client import Enum as EnumMetric

from swarmd.errors import ConfigError, DaemonError
from swarmd.scores import Score, as_number

log = logging.getLogger(__name__)

PREFIX = "swarmd"
MEMBERSHIP_STATES = ("unknown", "not_member", "pending", "active", "removed")  # membership.Standing
# Phases last from milliseconds (elect on a dev chain) to an hour (training a real bundle).
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Label values come from peers' failures and model metric names: keep the series count bounded.
MAX_LABEL_VALUES = 32
_LABEL_SAFE = re.compile(r"[^a-zA-Z0-9_.:-]")


class _BoundedLabels:
    """Maps free-form label values to safe ones; past MAX_LABEL_VALUES distinct values, to "other"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        clean = _LABEL_SAFE.sub("_", str(value))[:64] or "unknown"
        with self._lock:
            if clean in self._seen:
                return clean
            if len(self._seen) >= MAX_LABEL_VALUES:
                return "other"
            self._seen.add(clean)
            return clean


class Metrics:
    """Every metric of one daemon. Methods are cheap and thread-safe (prometheus-client's own locks)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rounds_completed = Counter(
            f"{PREFIX}_rounds_completed", "Rounds finalized and taken up by this site.", registry=r
        )
        self.current_round = Gauge(
            f"{PREFIX}_current_round", "The round this site is working on.", registry=r
        )
        self.last_finalized_round = Gauge(
            f"{PREFIX}_last_finalized_round", "The newest finalized round.", registry=r
        )
        self.phase_seconds = Histogram(
            f"{PREFIX}_phase_duration_seconds",
            "Time spent in each round phase.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.transport_bytes = Counter(
            f"{PREFIX}_transport_bytes", "Bytes sent and received over ZeroMQ.", ["direction"], registry=r
        )
        self.rejections = Counter(
            f"{PREFIX}_rejections", "Updates or messages refused, by reason.", ["reason"], registry=r
        )
        self.receipts = Counter(
            f"{PREFIX}_receipts",
            "Delivery receipts: kept or missing/invalid/unsaved (as a committer), unsigned (as a leader).",
            ["outcome"],
            registry=r,
        )
        self.elections = Counter(f"{PREFIX}_elections", "Leader elections this site saw.", registry=r)
        self.reelections = Counter(
            f"{PREFIX}_reelections", "Re-elections after a leader timed out.", registry=r
        )
        self.rounds_led = Counter(f"{PREFIX}_rounds_led", "Rounds this site merged as leader.", registry=r)
        self.epsilon = Gauge(
            f"{PREFIX}_privacy_epsilon",
            "Differential privacy spent by this site so far (epsilon).",
            registry=r,
        )
        self.budget_spent = Gauge(
            f"{PREFIX}_privacy_budget_spent",
            "1 once this site's epsilon budget stops it committing.",
            registry=r,
        )
        self.training_samples = Counter(
            f"{PREFIX}_training_samples", "Samples trained on locally.", registry=r
        )
        self.training_loss = Gauge(
            f"{PREFIX}_training_loss", "Loss of the latest local training.", registry=r
        )
        self.model_metric = Gauge(
            f"{PREFIX}_model_metric", "Latest held-out metric of the merged model.", ["name"], registry=r
        )
        self.membership_state = EnumMetric(
            f"{PREFIX}_membership",
            "This site's standing on chain: pending (admission), not_member, active or removed.",
            states=list(MEMBERSHIP_STATES),
            registry=r,
        )
        self.peer_path = Gauge(
            f"{PREFIX}_peer_path",
            "1 for the path a peer is reached on now (zmq, direct or relayed libp2p), else 0.",
            ["peer", "path"],
            registry=r,
        )
        self.peer_bytes = Gauge(
            f"{PREFIX}_peer_bytes",
            "Model bytes moved with a peer so far, per path and direction.",
            ["peer", "path", "direction"],
            registry=r,
        )
        self._reason = _BoundedLabels()
        self._metric_name = _BoundedLabels()

    def membership(self, standing: str) -> None:
        self.membership_state.state(standing)

    def set_round(self, r: int) -> None:
        self.current_round.set(r)

    def observe_phase(self, phase: str, seconds: float) -> None:
        if seconds >= 0:  # a wall clock stepped backwards gives nothing worth recording
            self.phase_seconds.labels(phase=phase).observe(seconds)

    def round_done(self, r: int) -> None:
        self.rounds_completed.inc()
        self.last_finalized_round.set(r)

    def election(self) -> None:
        self.elections.inc()

    def reelection(self) -> None:
        self.reelections.inc()

    def led(self) -> None:
        self.rounds_led.inc()

    def rejection(self, reason: str) -> None:
        self.rejections.labels(reason=self._reason(reason)).inc()

    def receipt(self, outcome: str) -> None:
        self.receipts.labels(outcome=outcome).inc()

    def transport_rejections(self, totals: Mapping[str, int], seen: Mapping[str, int]) -> dict[str, int]:
        """Count what the transport refused since `seen` (its counters as last mirrored); returns
        the counters to pass as `seen` next time."""
        for reason, total in totals.items():
            if total > seen.get(reason, 0):
                self.rejections.labels(reason=self._reason(reason)).inc(total - seen.get(reason, 0))
        return dict(totals)

    def observe_training(self, n_samples: int, loss: float | None = None) -> None:
        self.training_samples.inc(max(0, n_samples))
        if loss is not None:
            self.training_loss.set(loss)

    def privacy(self, epsilon: float, budget_spent: bool) -> None:
        self.epsilon.set(epsilon)
        self.budget_spent.set(1 if budget_spent else 0)

    def model_metrics(self, values: Mapping[str, Score]) -> None:
        # An undefined metric (AUC on one class) is NaN, so the series stays visible instead of vanishing.
        for name, value in values.items():
            self.model_metric.labels(name=self._metric_name(name)).set(as_number(value))

    def peer_paths(self, paths: Mapping[str, Mapping[str, Any]]) -> None:
        """Mirror `DaemonState.peer_paths` (members only: the label set is bounded by the registry)."""
        for peer, info in paths.items():
            for path in ("zmq", "direct", "relayed"):
                self.peer_path.labels(peer=peer, path=path).set(1 if info["path"] == path else 0)
            for direction in ("out", "in"):
                for path, n in info[f"bytes_{direction}"].items():
                    self.peer_bytes.labels(peer=peer, path=path, direction=direction).set(n)

    def transport_hook(self, direction: str, nbytes: int) -> None:
        """Count bytes moved by the transport; `direction` is "in" or "out"."""
        if direction not in ("in", "out"):
            log.debug("ignoring transport bytes with direction %r", direction)
            return
        if nbytes > 0:
            self.transport_bytes.labels(direction=direction).inc(nbytes)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the journal; errors still surface in the scraper."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper must not hold up shutdown


class MetricsServer:
    """A running /metrics endpoint. `address` is the bound (host, port); `stop()` is idempotent."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        # A short poll interval keeps stop() (which waits for the loop to notice) quick at shutdown.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="swarmd-metrics", daemon=True
        )
        self._thread.start()
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def parse_bind(bind: str) -> tuple[str, int]:
    """ "host:port", "[v6]:port" or ":port" (all interfaces) -> (host, port). Raises ConfigError."""
    host, sep, port_text = bind.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"metrics.bind must be host:port, got {bind!r}", hint='e.g. "127.0.0.1:9477"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"metrics.bind: write an IPv6 host in brackets, got {bind!r}")
    return host or "0.0.0.0", int(port_text)


def start_metrics_server(bind: str, metrics: Metrics) -> MetricsServer | None:
    """Serve `metrics` on http://bind/metrics in a background thread; None when bind is empty.

    Raises ConfigError for a malformed bind, DaemonError when the address cannot be bound.
    """
    if not bind.strip():
        return None
    host, port = parse_bind(bind)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigError(f"metrics.bind: cannot resolve {host!r}: {exc.strerror}") from None

    server_cls = type("_MetricsServer", (_ThreadingServer,), {"address_family": family})
    try:
        server: WSGIServer = make_server(
            host, port, make_wsgi_app(metrics.registry), server_cls, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise DaemonError(
            f"cannot serve metrics on {bind}: {exc.strerror or exc}", hint="pick a free port in metrics.bind"
        ) from None
    running = MetricsServer(server)
    log.info("metrics on %s", running.url)
    return running
