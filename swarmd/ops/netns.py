"""A WAN on one machine: network namespaces joined by a bridge, each node's link shaped by `tc tbf`.

`WanNet` makes a hub namespace holding a bridge, and one namespace per node (a site, the chain), each
joined to the bridge by a veth pair: `eth0` inside the node, `v<i>` on the bridge. A shaped node gets
a token-bucket filter on the egress of *both* ends of its veth: the node's `eth0` shapes what it
sends (its uplink), the hub's `v<i>` what it receives (its downlink). Egress on both ends needs no
ifb device and shapes each direction independently, as a full-duplex access link is. `netem` is not
built into every kernel (not into this one), so no latency is added: links have a rate, not a delay.

TCP's congestion control is the namespace's own setting, inherited from the host's default. A WanNet
made with `congestion` sets it in every namespace (the first of those algorithms the kernel lets a
namespace choose; `tcp` says which). The WAN bench asks for cubic, Linux's default, because a link
without delay misleads BBR (the default on some cloud images, this VM's among them): BBR sizes a flow's
window from the smallest round trip it has seen, about 0.1 ms here, so a flow whose acknowledgements
queue behind the other direction's data (50 ms of tbf queue) was held to a third of the link.

Every address lives inside the namespaces made here (SUBNET on their private bridge; each run has
its own hub, so two runs never share a network); nothing is added to the caller's namespace. Names
carry the creating process's pid and a random tag, so concurrent runs do not collide and a later run
can remove what a killed one left (`remove_stale`). `teardown` kills what still runs inside, deletes
the namespaces (and with them their veths) and never raises: it runs after a failure or a Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from swarmd.errors import TransportError, UsageError

log = logging.getLogger(__name__)

PREFIX = "swan"
SUBNET = "10.203.0"  # /24 inside this run's namespaces only
NODE_DEV = "eth0"
BRIDGE = "br0"
BURST_S = 0.01  # token bucket depth: 10 ms of the rate (at least MIN_BURST)
MIN_BURST = 32 * 1024
CONGESTION_KEY = "net.ipv4.tcp_congestion_control"
QUEUE_S = 0.05  # bytes queued behind the bucket before tail drop: 50 ms of the rate
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?\s*$", re.IGNORECASE)
_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+)")
_STALE = re.compile(rf"^{PREFIX}(\d+)x[0-9a-f]{{4}}-")


class NetnsError(TransportError):
    """A namespace, veth, bridge or qdisc could not be made, or a process in one failed."""


class NetnsUnavailable(NetnsError):
    """This machine cannot make network namespaces here: not root, no `ip`/`tc`, or the kernel refuses."""


# --- pure parts --------------------------------------------------------------------------------------
def parse_rate(text: str) -> int:
    """'100mbit' -> 100_000_000 bits/s (tc's SI units: bit, kbit, mbit, gbit; a bare number is bit/s)."""
    m = _RATE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"rate {text!r} is not a link rate", hint="e.g. 100mbit or 1gbit")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "bit").lower()])


def format_rate(bps: int) -> str:
    """100_000_000 -> '100mbit' (the largest unit that divides it)."""
    for unit in ("gbit", "mbit", "kbit"):
        if bps % _UNITS[unit] == 0:
            return f"{bps // _UNITS[unit]}{unit}"
    return f"{bps}bit"


def burst_bytes(rate_bps: int) -> int:
    """The bucket depth for `rate_bps`: BURST_S of the rate, at least MIN_BURST (a few packets)."""
    return max(MIN_BURST, int(rate_bps / 8 * BURST_S))


def tbf_argv(ns: str, dev: str, rate_bps: int) -> list[str]:
    """`tc` shaping `dev`'s egress in namespace `ns` to `rate_bps` (replacing any root qdisc)."""
    burst = burst_bytes(rate_bps)
    limit = burst + int(rate_bps / 8 * QUEUE_S)
    return [
        "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root",
        "tbf", "rate", f"{rate_bps}bit", "burst", str(burst), "limit", str(limit),
    ]  # fmt: skip


def ns_name(tag: str, node: str) -> str:
    return f"{tag}-{node}"


def new_tag(pid: int | None = None) -> str:
    """A run's name prefix: PREFIX, the owner's pid (for `remove_stale`) and a random part."""
    return f"{PREFIX}{os.getpid() if pid is None else pid}x{secrets.token_hex(2)}"


def stale_namespaces(names: Sequence[str], alive: set[int]) -> list[str]:
    """The namespaces among `names` made by a run whose process is no longer in `alive`."""
    out = []
    for name in names:
        m = _STALE.match(name)
        if m is not None and int(m.group(1)) not in alive:
            out.append(name)
    return out


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """/proc/net/dev -> {interface: (rx_bytes, tx_bytes)}."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if sep and len(fields) >= 9:
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def parse_tbf_stats(text: str) -> dict[str, int]:
    """`tc -s qdisc show dev D` -> what the root qdisc sent (bytes, packets) and dropped (packets)."""
    m = _SENT.search(text)
    if m is None:
        raise NetnsError(f"no qdisc statistics in {text[:200]!r}")
    return {"sent_bytes": int(m.group(1)), "sent_packets": int(m.group(2)), "dropped": int(m.group(3))}


def link_counters(pid: int, dev: str = NODE_DEV) -> tuple[int, int]:
    """(rx, tx) bytes on `dev` in the namespace of process `pid`: the wire count, headers included.

    /proc/<pid>/net/dev shows that process's namespace, so no process need be started to read it."""
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError as exc:
        raise NetnsError(f"cannot read the counters of process {pid}: {exc.strerror}") from None
    counters = parse_net_dev(text)
    if dev not in counters:
        raise NetnsError(f"process {pid}'s namespace has no interface {dev}")
    return counters[dev]


# --- the machine's side ------------------------------------------------------------------------------
def _run(argv: Sequence[str], what: str) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{what}: {' '.join(argv)}: {exc}") from None
    if done.returncode != 0:
        raise NetnsError(f"{what}: `{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def check_available() -> None:
    """NetnsUnavailable, with the reason, unless this process can make namespaces and shape links."""
    if sys.platform != "linux":
        raise NetnsUnavailable(f"network namespaces are a Linux feature; this is {sys.platform}")
    if os.geteuid() != 0:
        raise NetnsUnavailable(
            "making network namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)",
            hint="run as root, e.g. with sudo, on a machine where you may",
        )
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"`{tool}` is not installed", hint="install iproute2")


def congestion_of(ns: str) -> str:
    """The TCP congestion control new connections in namespace `ns` use."""
    return _run(["ip", "netns", "exec", ns, "sysctl", "-n", CONGESTION_KEY], f"reading {ns}'s TCP").strip()


def set_congestion(ns: str, choices: Sequence[str]) -> str:
    """Set the first of `choices` the kernel accepts as `ns`'s TCP congestion control; returns it. A
    namespace may choose only what `net.ipv4.tcp_allowed_congestion_control` lists (the host's default
    and reno, unless the host allows more), so cubic is refused where the host runs another default."""
    refusals = []
    for name in choices:
        try:
            _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{CONGESTION_KEY}={name}"], "setting TCP")
        except NetnsError as exc:
            refusals.append(str(exc))
            continue
        return congestion_of(ns)
    raise NetnsError(
        f"no TCP congestion control of {list(choices)} can be set in {ns}: " + "; ".join(refusals),
        hint="`sysctl net.ipv4.tcp_allowed_congestion_control` lists those a namespace may choose",
    )


def list_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], "listing namespaces")
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    with contextlib.suppress(NetnsError):
        return [int(p) for p in _run(["ip", "netns", "pids", ns], f"processes in {ns}").split()]
    return []


def _delete(ns: str) -> None:
    """Kill what still runs in `ns` (only this bench's processes live there) and delete it; never raises."""
    for pid in ns_pids(ns):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while ns_pids(ns) and time.monotonic() < end:
        time.sleep(0.05)
    try:
        _run(["ip", "netns", "delete", ns], f"deleting {ns}")
    except NetnsError as exc:
        log.warning("%s", exc)


def remove_stale() -> list[str]:
    """Delete the namespaces earlier runs left behind when their process died; returns their names."""
    alive = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    stale = stale_namespaces(list_namespaces(), alive)
    for ns in stale:
        _delete(ns)
    return stale


@dataclass(frozen=True)
class Node:
    """One namespace on the bridge: its name, its address, and its link rate (None: unshaped)."""

    name: str
    ns: str
    ip: str
    hub_dev: str
    rate_bps: int | None

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this node's namespace (`ip netns exec` execs it: the pid stays the same)."""
        return ["ip", "netns", "exec", self.ns, *argv]


@dataclass
class WanNet:
    """A hub namespace with a bridge, and nodes on it; `teardown` (or leaving the `with`) removes all.
    `congestion`: TCP congestion controls to set in every namespace, the first one allowed there (none:
    the host's default); `tcp` is the one in force."""

    tag: str = field(default_factory=new_tag)
    nodes: dict[str, Node] = field(default_factory=dict)
    congestion: tuple[str, ...] = ()
    tcp: str = ""
    _made: list[str] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return ns_name(self.tag, "hub")

    def create(self) -> WanNet:
        check_available()
        try:
            self._add_ns(self.hub)
        except NetnsError as exc:
            raise NetnsUnavailable(f"cannot make a network namespace here: {exc}") from None
        _run(["ip", "-n", self.hub, "link", "add", BRIDGE, "type", "bridge"], "making the bridge")
        _run(["ip", "-n", self.hub, "link", "set", BRIDGE, "up"], "starting the bridge")
        return self

    def _add_ns(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns], f"making namespace {ns}")
        self._made.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"loopback in {ns}")

    def add(self, name: str, rate_bps: int | None) -> Node:
        """A namespace `name` joined to the bridge at the next address; its link shaped to `rate_bps`."""
        if name in self.nodes or name == "hub":
            raise NetnsError(f"node {name!r} is already on this network")
        i = len(self.nodes)
        node = Node(name, ns_name(self.tag, name), f"{SUBNET}.{i + 2}", f"v{i}", rate_bps)
        self._add_ns(node.ns)
        self.tcp = set_congestion(node.ns, self.congestion) if self.congestion else congestion_of(node.ns)
        hub = ["ip", "-n", self.hub, "link"]
        _run([*hub, "add", node.hub_dev, "type", "veth", "peer", "name", NODE_DEV, "netns", node.ns], "veth")
        _run([*hub, "set", node.hub_dev, "master", BRIDGE, "up"], "attaching the veth to the bridge")
        _run(["ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", NODE_DEV], f"address of {name}")
        _run(["ip", "-n", node.ns, "link", "set", NODE_DEV, "up"], f"link of {name}")
        if rate_bps is not None:
            _run(tbf_argv(node.ns, NODE_DEV, rate_bps), f"shaping {name}'s uplink")
            _run(tbf_argv(self.hub, node.hub_dev, rate_bps), f"shaping {name}'s downlink")
        self.nodes[name] = node
        return node

    def qdiscs(self, name: str) -> dict[str, str]:
        """`tc -s qdisc` of both ends of `name`'s link ('up': the node's egress, 'down': the hub's)."""
        node = self.nodes[name]
        up = _run(["tc", "-n", node.ns, "-s", "qdisc", "show", "dev", NODE_DEV], "reading qdiscs")
        down = _run(["tc", "-n", self.hub, "-s", "qdisc", "show", "dev", node.hub_dev], "reading qdiscs")
        return {"up": up, "down": down}

    def wait_tcp(self, name: str, host: str, port: int, timeout: float) -> None:
        """Until something in `name`'s namespace can connect to host:port; NetnsError after `timeout`."""
        argv = self.nodes[name].argv([sys.executable, "-c", _PROBE, host, str(port), str(timeout)])
        try:
            _run(argv, f"waiting for {host}:{port} from {name}")
        except NetnsError:
            raise NetnsError(f"{host}:{port} did not answer from {name} within {timeout:.0f} s") from None

    def teardown(self) -> None:
        """Kill every process left in these namespaces and delete them, nodes first; never raises."""
        for ns in reversed(self._made):
            _delete(ns)
        self._made.clear()
        self.nodes.clear()

    def __enter__(self) -> WanNet:
        return self.create() if not self._made else self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


_PROBE = """
import socket, sys, time
host, port, end = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > end:
            sys.exit(1)
        time.sleep(0.1)
"""


@contextlib.contextmanager
def wan_net(congestion: Sequence[str] = ()) -> Iterator[WanNet]:
    """A `WanNet` (stale namespaces of dead runs removed first; TCP as `congestion` asks), torn down on
    exit, SIGTERM included."""
    check_available()
    remove_stale()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: the finally still runs
        signal.signal(signal.SIGTERM, interrupt)
    net = WanNet(congestion=tuple(congestion))
    try:
        yield net.create()
    finally:
        net.teardown()
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)
