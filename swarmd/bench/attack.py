"""`swarm bench attack`: two goals of issue 11 (hardening), measured against real daemons on a real anvil.

One `local_swarm` of 4 provisioned sites on instant blocks: 3 `swarmd` subprocesses and one member
driven from this process, the attacker. The attacker never commits, so it is never drawn as a leader
and every round has the same 3 honest committers; `min_peers = 3` and `commit_window = 1` make the
election wait for those three and not a block longer (it would otherwise wait for the attacker's
commit). The DenseNet121 example bundle, 1 local step, no evaluation, `fanout = 3` (every other
member), as in `swarm bench round`.

**Flood.** Round 0 is a warm-up (start-up, first model load), rounds 1..K are clean and rounds
K+1..2K are flooded, in that order, so a flood that outlasts its round spills only into another
flooded round. The attacker watches the chain (every 20 ms, in every round alike) and, as soon as a
flooded round is elected, sends 10,000 malformed control frames to its leader over the CURVE
connection of its member key, made beforehand: garbage, random bytes, nested arrays, announces of
unknown hashes, and one frame in 25 expensive (60,000 nested empty arrays, an oversize ping, a
5,000-tensor manifest, an invalid one). Each round's cycle (finalization of r-1 to that of r) comes
from the daemons' journals and is split as in `swarmd.bench.round`; the goal is held against the
worst flooded round over the mean clean round, and every honest committer must be `included` on
chain in every flooded round.

**Stranger.** When every daemon is done (idle, still serving), a stranger sends 16 MiB frames to
each port of site-a for a while: the control port (ZeroMQ with a fresh CURVE key, a raw ZMTP greeting
followed by a 16 MiB frame, raw bytes), the bulk port (ZeroMQ without a login, with a made-up PLAIN
login, raw ZMTP) and the Prometheus port (an HTTP POST with a 16 MiB body), one vector after
another. Meanwhile a member (the attacker's key, in its own process) pings the daemon every 20 ms.
Peak RSS growth is the kernel's high-water mark (`VmHWM`, reset through `/proc/PID/clear_refs`
before each vector) minus the RSS at the reset, cross-checked by sampling RSS every 5 ms; the ping
delay is the largest round trip during the vectors minus the median one before them (a ping not
answered within 1 s counts as 1 s).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from swarmd.bench.report import Goal, Report, goal, table
from swarmd.errors import DaemonError, SwarmError

if TYPE_CHECKING:
    from swarmd.ledger import Ledger, Member, RoundInfo
    from swarmd.ops import LocalSwarm
    from swarmd.ops.launcher import DaemonProcess

MIB = 1 << 20
FLOOD_FRAMES = 10_000
STRANGER_FRAME = 16 * MIB
RATIO_LIMIT = 1.5  # worst flooded round / mean clean round
RSS_LIMIT_MIB = 32.0
PING_DELAY_LIMIT_MS = 100.0
PARALLEL = 8  # strangers at once in the vector beyond the goal
PING_INTERVAL = 0.02
PING_TIMEOUT = 1.0
WATCH_INTERVAL = 0.02  # the attacker's chain polling, in every round alike

SWARM = {
    "local_steps": 1,
    "min_peers": 3,  # the three daemons: the election waits for each of them...
    "commit_window": 1,  # ...and not a block longer for the attacker, which never commits
    "leader_timeout": 100000,
    "merge": "fedavg",
    "send": "weights",
    "fanout": 3,  # every other member, as fanout 2 is at N = 3 in the round bench
    "eval_every": 0,
}


class BenchFailed(DaemonError):
    """A daemon died or the swarm did not finish in time during the attack benchmark."""


# --- the attacker's sockets -------------------------------------------------------------------------
class Dealer:
    """A ZeroMQ DEALER that sends arbitrary frames: a member's CURVE key, a stranger's, or none."""

    def __init__(
        self,
        endpoint: str,
        server_key: bytes | None = None,
        keys: tuple[bytes, bytes] | None = None,
        login: tuple[bytes, bytes] | None = None,
    ) -> None:
        """`server_key` (raw 32 bytes): CURVE with `keys` (z85 public, secret; fresh when None);
        `login`: a PLAIN user name and password."""
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = 1000 if server_key is not None and keys is not None else 4
        if server_key is not None:
            public, secret = keys or zmq.curve_keypair()
            self.sock.curve_serverkey = server_key
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
        if login is not None:
            self.sock.plain_username, self.sock.plain_password = login
        self.sock.connect(endpoint)

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class QuietMember(threading.Thread):
    """The attacker's own node at its registered endpoint, in a thread: it answers announces and pings
    like any member, and leads and serves nothing. Without it every daemon's announce to the attacker
    waits for its timeout, which holds up the announcer's next round (see `attack_notes`)."""

    def __init__(self, bind: str, keys: tuple[bytes, bytes], peers: dict[bytes, str]) -> None:
        super().__init__(daemon=True, name="quiet-member")
        self.bind, self.keys, self.peers = bind, keys, peers
        self.ready, self._stop_at = threading.Event(), threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._serve())
        except (SwarmError, zmq.ZMQError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()

    async def _serve(self) -> None:
        import asyncio

        from swarmd.transport import Node, Refusal, Verdict

        class Quiet:
            def check_offer(self, peer: Any, header: Any) -> Verdict:
                return Verdict(False, Refusal.NOT_READY, "not a leader")

            async def on_update(self, peer: Any, header: Any, state: Any, digest: Any) -> Verdict:
                return Verdict(False, Refusal.NOT_READY, "not a leader")

            async def on_announce(self, peer: Any, header: Any) -> None:
                return None

            def serve_model(self, model_hash: bytes) -> None:
                return None

        node = Node(
            Quiet(),
            bind=self.bind,
            public_key=self.keys[0],
            secret_key=self.keys[1],
            max_bytes=1 << 30,
        )
        async with node:
            node.set_peers(self.peers)
            self.ready.set()
            while not self._stop_at.is_set():
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        self._stop_at.set()
        self.join(10)


def flood_frames(r: int, term: int, version: int, n: int = FLOOD_FRAMES) -> list[bytes]:
    """`n` frames a member might send to hurt round `r`'s leader: malformed, and 1 in 25 expensive."""
    entry = {"name": "", "dtype": "float32", "shape": [1], "nbytes": 4}
    manifest = [{**entry, "name": f"t{i:06d}"} for i in range(5_000)]
    offer = {
        "v": version,
        "kind": "update",
        "req": 1,
        "round": r,
        "term": term,
        "digest": bytes(32),
        "meta": {},
    }
    cheap = [
        b"\xc1garbage",
        os.urandom(200),
        msgpack.packb({"v": version, "kind": "ping", "req": 1, "sent": [[[[]]]] * 2_000}),  # nested, 8 KiB
        msgpack.packb({"v": version, "kind": "announce", "req": 1, "round": r, "model_hash": os.urandom(32)}),
    ]
    expensive = [
        msgpack.packb({**offer, "manifest": [[]] * 60_000}),  # 60,000 nested empty arrays
        msgpack.packb(
            {"v": version, "kind": "ping", "req": 1, "sent": 0.0, "pad": "x" * 160_000}
        ),  # oversize
        msgpack.packb({**offer, "manifest": manifest}),  # a huge manifest, valid-looking
        msgpack.packb({**offer, "manifest": [entry] * 5_000}),  # a huge invalid one
    ]
    return [expensive[i // 25 % 4] if i % 25 == 0 else cheap[i % 4] for i in range(n)]


def _rejections(bind: str) -> dict[str, float]:
    """A daemon's `swarmd_rejections_total` by reason, from its Prometheus endpoint ({} if unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{bind}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "swarmd_rejections_total"
    }


class Attacker(threading.Thread):
    """Watches every round's election; floods the leader of each round in `flooded`."""

    def __init__(
        self,
        ledger: Ledger,
        rounds: int,
        flooded: list[int],
        members: dict[str, tuple[str, bytes]],
        keys: tuple[bytes, bytes],
        metrics: dict[str, str],
        version: int,
        deadline: float,
    ) -> None:
        """`members`: account -> (control endpoint, CURVE key) of each daemon; `keys`: the attacker's
        CURVE keys; `metrics`: account -> Prometheus host:port."""
        super().__init__(daemon=True, name="attacker")
        self.ledger, self.rounds, self.flooded = ledger, rounds, flooded
        self.members, self.keys, self.metrics = members, keys, metrics
        self.version, self.deadline = version, deadline
        self.dealers: dict[str, Dealer] = {}
        self.elections: dict[int, float] = {}  # round -> wall time the election was seen
        self.floods: dict[int, dict[str, Any]] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            frames = {r: flood_frames(r, 1, self.version) for r in self.flooded}
            for r in range(self.rounds):
                info = self._elected(r)
                if info is None:
                    continue
                if info.leader not in self.metrics:
                    continue
                before = _rejections(self.metrics[info.leader])  # in every round alike
                self.connect(info.leader)
                if r in self.flooded:
                    f = frames[r] if info.term == 1 else flood_frames(r, info.term, self.version)
                    self.floods[r] = self._flood(r, info.leader, f, before)
        except (SwarmError, zmq.ZMQError, OSError) as exc:  # reported with the result
            self.error = f"{type(exc).__name__}: {exc}"

    def _elected(self, r: int) -> RoundInfo | None:
        from swarmd.ledger import RoundStatus

        while time.monotonic() < self.deadline:
            cur = self.ledger.current_round()
            if cur > r:
                return None  # missed: the round is over already
            if cur == r and (info := self.ledger.round(r)).status == RoundStatus.ELECTED:
                self.elections[r] = time.time()
                return info
            time.sleep(WATCH_INTERVAL)
        return None

    def connect(self, account: str) -> Dealer:
        """A DEALER with the attacker's member key to `account`'s daemon, its handshake confirmed by a
        ping's answer (made when the round is elected, in every round alike)."""
        if account in self.dealers:
            return self.dealers[account]
        endpoint, key = self.members[account]
        for _ in range(5):
            d = Dealer(endpoint, key, self.keys)
            d.sock.send(msgpack.packb({"v": self.version, "kind": "ping", "req": 0, "sent": 0.0}))
            if d.sock.poll(2000):
                d.sock.recv_multipart()
                self.dealers[account] = d
                return d
            d.close()
        raise BenchFailed(f"no answer from {endpoint} to the attacker's ping")

    def close(self) -> None:
        for d in self.dealers.values():
            d.close()

    def _flood(self, r: int, leader: str, frames: list[bytes], before: dict[str, float]) -> dict[str, Any]:
        sock = self.dealers[leader].sock
        sock.sndtimeo = 10_000
        t0 = time.time()
        sent = 0
        with contextlib.suppress(zmq.Again):
            for f in frames:
                sock.send(f)
                sent += 1
        t1 = time.time()
        return {
            "leader": leader,
            "frames": sent,
            "bytes": sum(len(f) for f in frames[:sent]),
            "started": t0,
            "ended": t1,
            "send_s": round(t1 - t0, 3),
            "after_election_s": round(t0 - self.elections[r], 3),
            "rejections_before": before,
        }


# --- the stranger and the pinger --------------------------------------------------------------------
def pinger(
    endpoint: str, server_key: bytes, keys: tuple[bytes, bytes], version: int, conn: Connection
) -> None:
    """In its own process: ping every PING_INTERVAL; "ready" once the first answer came; at "stop",
    send back [(wall time sent, round trip or None)]."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey = server_key
    sock.curve_publickey, sock.curve_secretkey = keys
    sock.connect(endpoint)
    out: list[tuple[float, float | None]] = []
    req, ready = 0, False
    while not conn.poll(0):
        req += 1
        sent, t0 = time.time(), time.monotonic()
        sock.send(msgpack.packb({"v": version, "kind": "ping", "req": req, "sent": t0}))
        rtt = None
        while (left := t0 + PING_TIMEOUT - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
            answer = msgpack.unpackb(sock.recv_multipart()[0])
            if isinstance(answer, dict) and answer.get("req") == req:
                rtt = time.monotonic() - t0
                break
        if ready:
            out.append((sent, rtt))
        elif rtt is not None:
            ready = True
            conn.send("ready")
        time.sleep(PING_INTERVAL)
    conn.recv()
    conn.send(out)
    ctx.destroy(linger=0)


def _proc_bytes(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise BenchFailed(f"no {field_name} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler(threading.Thread):
    """The largest RSS seen every 5 ms (psutil), alongside the kernel's high-water mark."""

    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(daemon=True, name="rss")
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop_at = threading.Event()

    def reset(self) -> int:
        self.peak = now = self.proc.memory_info().rss
        return now

    def run(self) -> None:
        while not self._stop_at.wait(0.005):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> None:
        self._stop_at.set()
        self.join(2)


def _send_zmq(d: Dealer, frames: list[bytes], seconds: float) -> int:
    """Send `frames` as one message again and again for `seconds`, never blocking. Returns how many."""
    sent, end = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            try:
                d.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                sent += 1
            except zmq.Again:
                time.sleep(0.01)
    finally:
        d.close()
    return sent


def _send_raw(port: int, head: bytes, body: bytes, seconds: float) -> int:
    """Connect, send `head` + `body`, again and again for `seconds`. Returns the connections made."""
    made, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            made += 1
            s.settimeout(max(0.05, end - time.monotonic()))
            s.sendall(head)
            s.sendall(body)
    return made


def _zmtp_greeting(mechanism: bytes, size: int) -> bytes:
    """A ZMTP 3.0 greeting for `mechanism`, then the head of a command frame claiming `size` bytes."""
    return (
        b"\xff"
        + bytes(8)
        + b"\x7f\x03\x00"
        + mechanism.ljust(20, b"\0")
        + b"\0"
        + bytes(31)
        + (b"\x06" + size.to_bytes(8, "big"))
    )


def _vectors(
    control: tuple[str, bytes], bulk_port: int | None, metrics_port: int | None, big: bytes
) -> list[tuple[str, Callable[[float], int]]]:
    """(what, send for `seconds` -> how many 16 MiB frames or connections) for each port of a daemon."""
    endpoint, key = control
    cport = int(endpoint.rsplit(":", 1)[1])
    out: list[tuple[str, Callable[[float], int]]] = [
        ("control: ZeroMQ, a fresh CURVE key", lambda s: _send_zmq(Dealer(endpoint, key), [big], s)),
        (
            "control: raw ZMTP, CURVE greeting + 16 MiB frame",
            lambda s: _send_raw(cport, _zmtp_greeting(b"CURVE", len(big)), big, s),
        ),
        ("control: raw TCP, 16 MiB of random bytes", lambda s: _send_raw(cport, b"", big, s)),
    ]
    if bulk_port is not None:
        bulk = f"tcp://127.0.0.1:{bulk_port}"
        login = (os.urandom(32).hex().encode(), os.urandom(32).hex().encode())
        out += [
            ("bulk: ZeroMQ, no login", lambda s: _send_zmq(Dealer(bulk), [big], s)),
            ("bulk: ZeroMQ, a made-up PLAIN login", lambda s: _send_zmq(Dealer(bulk, login=login), [big], s)),
            (
                "bulk: raw ZMTP, NULL greeting + 16 MiB frame",
                lambda s: _send_raw(bulk_port, _zmtp_greeting(b"NULL", len(big)), big, s),
            ),
        ]
    if metrics_port is not None:
        head = f"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n".encode()
        out.append(("metrics: HTTP POST, 16 MiB body", lambda s: _send_raw(metrics_port, head, big, s)))
    return out


def _pings(samples: list[tuple[float, float | None]], start: float, end: float) -> dict[str, Any]:
    """Round-trip figures (ms) of the pings sent in [start, end); a missed one counts as PING_TIMEOUT."""
    rtts = sorted((r if r is not None else PING_TIMEOUT) * 1000 for t, r in samples if start <= t < end)
    missed = sum(1 for t, r in samples if start <= t < end and r is None)
    if not rtts:
        return {"pings": 0, "missed": 0, "median_ms": None, "p99_ms": None, "max_ms": None}
    p99 = rtts[min(len(rtts) - 1, round(0.99 * (len(rtts) - 1)))]
    return {
        "pings": len(rtts),
        "missed": missed,
        "median_ms": round(statistics.median(rtts), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(rtts[-1], 2),
    }


def _bulk_port(log: Path) -> int | None:
    """The bulk port the daemon announced in its log ("transport listening on ... (bulk port N)")."""
    import re

    with contextlib.suppress(OSError):
        found = re.findall(r"bulk port (\d+)", log.read_text(errors="replace"))
        if found:
            return int(found[-1])
    return None


def _vector(
    daemon: DaemonProcess, sampler: RssSampler, what: str, send: Callable[[float], int], seconds: float
) -> dict[str, Any]:
    """Run one vector for `seconds`; the daemon's peak RSS growth during it and its time window."""
    pid = daemon.pid or 0
    start = time.time()
    base = sampler.reset()
    hwm_reset = _reset_peak(pid)
    hwm0 = _proc_bytes(pid, "VmHWM")
    count = send(seconds)
    time.sleep(0.3)  # what the last frame costs, after it is sent
    hwm = _proc_bytes(pid, "VmHWM")
    if not daemon.alive():
        raise BenchFailed(f"{daemon.name} died under a stranger's frames ({what})")
    return {
        "vector": what,
        "sent": count,
        "window": (start, time.time()),
        "hwm_growth_mib": round((hwm - hwm0) / MIB, 2) if hwm_reset else None,
        "sampled_growth_mib": round((sampler.peak - base) / MIB, 2),
        "peak": sampler.peak,
    }


def _parallel(port: int, big: bytes) -> Callable[[float], int]:
    """PARALLEL strangers at once, each a raw ZMTP CURVE greeting and a 16 MiB frame, again and again."""

    def send(seconds: float) -> int:
        counts = [0] * PARALLEL

        def one(i: int) -> None:
            counts[i] = _send_raw(port, _zmtp_greeting(b"CURVE", len(big)), big, seconds)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(PARALLEL)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 5)
        return sum(counts)

    return send


def stranger_attack(
    daemon: DaemonProcess, member: Member, metrics_bind: str, keys: tuple[bytes, bytes], seconds: float
) -> dict[str, Any]:
    """16 MiB frames from a stranger to each port of `daemon` while a member pings it; see the module doc."""
    from swarmd.transport.messages import PROTOCOL_VERSION

    pid = daemon.pid
    if pid is None or not daemon.alive():
        raise BenchFailed(f"{daemon.name} is not running")
    bulk_port = _bulk_port(daemon.log)
    metrics_port = int(metrics_bind.rsplit(":", 1)[1]) if metrics_bind else None
    big = os.urandom(STRANGER_FRAME)
    vectors = _vectors((member.endpoint, member.curve_key), bulk_port, metrics_port, big)
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    child = spawn.Process(
        target=pinger, args=(member.endpoint, member.curve_key, keys, PROTOCOL_VERSION, theirs), daemon=True
    )
    child.start()
    sampler = RssSampler(pid)
    sampler.start()
    rows: list[dict[str, Any]] = []
    try:
        if not ours.poll(60) or ours.recv() != "ready":
            raise BenchFailed(f"the member's pings to {daemon.name} got no answer")
        quiet_start = time.time()
        time.sleep(max(1.0, seconds))
        quiet_end = time.time()
        reset_ok = _reset_peak(pid)
        phase_base = sampler.reset()
        phase_hwm0 = _proc_bytes(pid, "VmHWM")
        for what, send in vectors:
            rows.append(_vector(daemon, sampler, what, send, seconds))
        phase_end = time.time()
        phase_hwm = _proc_bytes(pid, "VmHWM")
        phase_peak = max(row["peak"] for row in rows)
        # Beyond the goal (one frame): several claimed 16 MiB frames on connections made at once.
        cport = int(member.endpoint.rsplit(":", 1)[1])
        extra = _vector(
            daemon,
            sampler,
            f"control: raw ZMTP, {PARALLEL} connections at once",
            _parallel(cport, big),
            seconds,
        )
    finally:
        sampler.stop()
        ours.send("stop")
        samples: list[tuple[float, float | None]] = ours.recv() if ours.poll(10) else []
        child.join(5)
        if child.is_alive():
            child.kill()
    for row in [*rows, extra]:
        row.update(_pings(samples, *row.pop("window")))
        del row["peak"]
    return {
        "site": daemon.name,
        "bulk_port_found": bulk_port is not None,
        "metrics_port": metrics_port,
        "seconds_per_vector": seconds,
        "frame_bytes": STRANGER_FRAME,
        "peak_reset": reset_ok,
        "baseline": _pings(samples, quiet_start, quiet_end),
        "attack": _pings(samples, quiet_end, phase_end),
        "vectors": rows,
        "parallel": extra,
        "phase_hwm_growth_mib": round((phase_hwm - phase_hwm0) / MIB, 2) if reset_ok else None,
        "phase_sampled_growth_mib": round((phase_peak - phase_base) / MIB, 2),
        "rss_mib": round(phase_base / MIB, 1),
    }


# --- the run ----------------------------------------------------------------------------------------
def run_attack_bench(
    quick: bool = False,
    *,
    rounds_each: int = 4,
    on_step: Callable[[str], None] | None = None,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    """Clean and flooded rounds, then a stranger's frames; see the module doc."""
    from swarmd.config import load_config
    from swarmd.daemon.site import site_identity
    from swarmd.daemon.store import Journal
    from swarmd.ledger import Ledger
    from swarmd.ops import DemoData, local_swarm, task_file
    from swarmd.train import BUNDLES_DIR
    from swarmd.transport.messages import PROTOCOL_VERSION

    each = 2 if quick else rounds_each
    rounds = 1 + 2 * each
    clean, flooded = list(range(1, 1 + each)), list(range(1 + each, rounds))
    note = on_step or (lambda msg: None)
    root = Path(tempfile.mkdtemp(prefix="swa-", dir="/tmp"))  # unix socket paths must stay short
    t0 = time.perf_counter()
    try:
        task = task_file(
            root / "swarm.toml",
            name="bench-attack",
            bundle=BUNDLES_DIR / "cxr_densenet",
            seed=11,
            swarm={"rounds": rounds, **SWARM},
        )
        note("devnet and 4 sites (3 daemons, 1 attacker)")
        data = DemoData(alpha=1.0, seed=5, n_per_site=16, n_test=8)
        with local_swarm(root, task, sites=4, data=data, start=False) as swarm:
            honest, atk_site = swarm.consortium.sites[:3], swarm.consortium.sites[3]
            daemons = swarm.daemons[:3]
            for d in daemons:
                d.start()
            cfg = load_config(atk_site.config)
            ident = site_identity(cfg)
            keys = (ident.curve.public, ident.curve.secret)
            members = {m.account: m for m in swarm.ledger.active_members()}
            metrics = {s.address: load_config(s.config).metrics.bind for s in honest}
            me = members[atk_site.address]
            quiet = QuietMember(
                cfg.transport.bind, keys, {m.curve_key: m.endpoint for m in members.values() if m is not me}
            )
            quiet.start()
            quiet.ready.wait(30)
            if quiet.error:
                raise BenchFailed(f"the attacker's node did not start: {quiet.error}")
            deadline = time.monotonic() + 120 + rounds * 3 * 40
            attacker = Attacker(
                Ledger(swarm.devnet.rpc_url, swarm.consortium.contract),
                rounds,
                flooded,
                {s.address: (members[s.address].endpoint, members[s.address].curve_key) for s in honest},
                keys,
                metrics,
                PROTOCOL_VERSION,
                deadline,
            )
            attacker.start()
            try:
                _wait_done(swarm, daemons, rounds, deadline, t0, note)
                attacker.join(15)
                for f in attacker.floods.values():
                    f["rejections_after"] = _rejections(metrics[f["leader"]])
            finally:
                if not attacker.is_alive():
                    attacker.close()
            rounds_wall = time.perf_counter() - t0
            infos = [swarm.ledger.round(r) for r in range(rounds)]
            journals = {s.name: Journal.read(s.journal).rounds for s in honest}
            note("a stranger's 16 MiB frames at site-a, a member pinging it")
            target = honest[0]
            stranger = stranger_attack(
                daemons[0], members[target.address], metrics[target.address], keys, 1.0 if quick else 2.0
            )
            alive = [d.name for d in daemons if d.alive()]
            quiet.stop()
            if keep_logs is not None:
                for s in honest:
                    (keep_logs / s.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(s.config.parent / "swarmd.log", keep_logs / s.name / "swarmd.log")
                    shutil.copy2(s.journal, keep_logs / s.name / "journal.json")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    names = {s.address: s.name for s in swarm.consortium.sites}
    return summarize(
        clean=clean,
        flooded=flooded,
        infos=infos,
        journals=journals,
        attacker=attacker,
        names=names,
        stranger=stranger,
        alive=alive,
        wall=rounds_wall,
        attacker_name=atk_site.name,
    )


def _wait_done(
    swarm: LocalSwarm,
    daemons: list[DaemonProcess],
    rounds: int,
    deadline: float,
    t0: float,
    note: Callable[[str], None],
) -> None:
    """Until each of `daemons` reports phase `done`; BenchFailed when one exits or at `deadline`."""
    while time.monotonic() < deadline:
        dead = [d for d in daemons if not d.alive()]
        if dead:
            raise BenchFailed(f"daemon {dead[0].name} exited; its log ends:\n{dead[0].tail(60)}")
        sts = [d.status() for d in daemons]
        phases = [st["phase"] if st else "starting" for st in sts]
        rnd = min((st["round"] for st in sts if st), default=0)
        note(f"round {rnd}/{rounds}, {phases.count('done')}/3 done, {time.perf_counter() - t0:.0f} s")
        if all(p == "done" for p in phases):
            return
        time.sleep(1.0)
    raise BenchFailed(f"the swarm did not finish {rounds} rounds in time\n{swarm.tails(15)}")


def summarize(
    *,
    clean: list[int],
    flooded: list[int],
    infos: list[RoundInfo],
    journals: dict[str, Any],
    attacker: Attacker,
    names: dict[str, str],
    stranger: dict[str, Any],
    alive: list[str],
    wall: float,
    attacker_name: str,
) -> dict[str, Any]:
    """The result: each round's cycle, chain facts and flood, the flood ratio, the stranger's figures."""
    from swarmd.bench.round import _cycle

    def site(account: str | None) -> str:
        return names.get(account or "", account or "-")

    rows = []
    for info in infos:
        r = info.round
        c = _cycle(r, journals)
        committers = [site(a) for a in info.committers]
        included = [site(a) for a in info.included]
        row: dict[str, Any] = {
            "round": r,
            "kind": "warm-up" if r == 0 else "flooded" if r in flooded else "clean",
            "leader": site(info.leader),
            "term": info.term,
            "committers": committers,
            "included": included,
            "honest_included": sum(1 for s in committers if s in included and s != attacker_name),
            "honest_committers": sum(1 for s in committers if s != attacker_name),
            "cycle_s": c["cycle_s"],
            "train_s": c["train_s"],
            "overhead_s": c["overhead_s"],
            "categories": c["categories"],
        }
        if (f := attacker.floods.get(r)) is not None:
            fin = min(
                (
                    rec.entered["disseminate"]
                    for j in journals.values()
                    if (rec := j.get(r)) and "disseminate" in rec.entered
                ),
                default=None,
            )
            after = f.get("rejections_after", {})
            before = f["rejections_before"]
            row["flood"] = {
                "frames": f["frames"],
                "mib": round(f["bytes"] / MIB, 1),
                "send_s": f["send_s"],
                "after_election_s": f["after_election_s"],
                "ended_before_finalize": fin is not None and f["ended"] <= fin,
                "rejected": {
                    k: int(v - before.get(k, 0)) for k, v in after.items() if v - before.get(k, 0) > 0
                },
            }
        rows.append(row)
    mean_clean = statistics.fmean(rows[r]["cycle_s"] for r in clean)
    flooded_cycles = [rows[r]["cycle_s"] for r in flooded]
    return {
        "bench": "attack",
        "cores": os.cpu_count(),
        "sites": 4,
        "attacker": attacker_name,
        "flood_frames": FLOOD_FRAMES,
        "clean_rounds": clean,
        "flooded_rounds": flooded,
        "rounds": rows,
        "clean_cycle_s": round(mean_clean, 3),
        "flooded_cycle_s": round(statistics.fmean(flooded_cycles), 3),
        "worst_flooded_cycle_s": round(max(flooded_cycles), 3),
        "ratio_worst": round(max(flooded_cycles) / mean_clean, 3),
        "ratio_mean": round(statistics.fmean(flooded_cycles) / mean_clean, 3),
        "overhead_ratio_mean": round(
            statistics.fmean(rows[r]["overhead_s"] for r in flooded)
            / statistics.fmean(rows[r]["overhead_s"] for r in clean),
            3,
        ),
        "floods_missed": [r for r in flooded if r not in attacker.floods],
        "attacker_error": attacker.error,
        "rounds_wall_s": round(wall, 1),
        "stranger": stranger,
        "alive_after": alive,
    }


# --- goals and rendering ----------------------------------------------------------------------------
def attack_goals(result: dict[str, Any]) -> list[Goal]:
    flooded = [r for r in result["rounds"] if r["kind"] == "flooded"]
    missed = result["floods_missed"]
    ratio = result["ratio_worst"]
    goals = [
        goal(
            "member flood of 10,000 malformed frames: worst flooded round / mean clean round",
            ratio,
            RATIO_LIMIT,
            ratio <= RATIO_LIMIT and not missed,
            f"mean flooded / mean clean {result['ratio_mean']}; overhead (cycle - training) "
            f"{result.get('overhead_ratio_mean', '-')}"
            + (f"; no flood in rounds {missed}" if missed else ""),
        )
    ]
    share = min((r["honest_included"] / max(r["honest_committers"], 1) for r in flooded), default=0.0)
    goals.append(
        goal(
            "honest committers included in every flooded round (%)",
            round(100 * share, 1),
            100.0,
            share >= 1.0 and all(r["honest_committers"] == 3 for r in flooded),
        )
    )
    st = result["stranger"]
    growth = max(
        [
            v
            for row in st["vectors"]
            for v in (row["hwm_growth_mib"], row["sampled_growth_mib"])
            if v is not None
        ]
        + [v for v in (st["phase_hwm_growth_mib"], st["phase_sampled_growth_mib"]) if v is not None]
    )
    goals.append(
        goal(
            "stranger's 16 MiB frames to every port: daemon peak RSS growth (MiB)",
            growth,
            RSS_LIMIT_MIB,
            growth < RSS_LIMIT_MIB,
            "kernel high-water mark reset before each vector"
            if st["peak_reset"]
            else "sampled every 5 ms only",
        )
    )
    base = st["baseline"]["median_ms"] or 0.0
    worst = st["attack"]["max_ms"]
    delay = round(worst - base, 2) if worst is not None else float(PING_TIMEOUT * 1000)
    goals.append(
        goal(
            "stranger's 16 MiB frames: ping delay (max round trip under attack - median at rest, ms)",
            delay,
            PING_DELAY_LIMIT_MS,
            delay < PING_DELAY_LIMIT_MS and st["attack"]["missed"] == 0 and bool(st["attack"]["pings"]),
            f"p99 {st['attack']['p99_ms']} ms, {st['attack']['missed']} missed of {st['attack']['pings']}",
        )
    )
    return goals


def format_tables(result: dict[str, Any]) -> str:
    st = result["stranger"]
    cats = ("chain", "exchange", "merge", "dissemination", "waiting")
    rounds = table(
        ("round", "kind", "leader", "cycle s", "train s", "overhead s", *cats, "included", "flood"),
        (
            (
                r["round"],
                r["kind"],
                r["leader"],
                f"{r['cycle_s']:.2f}",
                f"{r['train_s']:.2f}",
                f"{r['overhead_s']:.2f}",
                *(f"{r['categories'][k]:.2f}" for k in cats),
                f"{r['honest_included']}/{r['honest_committers']}",
                _flood_cell(r.get("flood")),
            )
            for r in result["rounds"]
        ),
    )
    vectors = table(
        (
            "vector",
            "sent",
            "peak RSS growth MiB (VmHWM)",
            "sampled MiB",
            "pings",
            "missed",
            "p99 ms",
            "max ms",
        ),
        (
            (
                v["vector"],
                v["sent"],
                "-" if v["hwm_growth_mib"] is None else f"{v['hwm_growth_mib']:.1f}",
                f"{v['sampled_growth_mib']:.1f}",
                v["pings"],
                v["missed"],
                v["p99_ms"],
                v["max_ms"],
            )
            for v in st["vectors"]
        ),
    )
    b = st["baseline"]
    return "\n".join(
        [
            f"4 members on instant blocks, {result['cores']} cores: 3 daemons (DenseNet121, 1 local step) "
            f"and an attacker ({result['attacker']}) that never commits. Round 0 warms up, rounds "
            f"{_span(result['clean_rounds'])} are clean, rounds {_span(result['flooded_rounds'])} flooded: "
            f"{result['flood_frames']:,} malformed frames to the leader from its election. Mean clean cycle "
            f"{result['clean_cycle_s']:.2f} s, mean flooded {result['flooded_cycle_s']:.2f} s, worst flooded "
            f"{result['worst_flooded_cycle_s']:.2f} s.",
            "",
            rounds,
            "",
            f"Stranger at {st['site']} (idle after its rounds, RSS {st['rss_mib']} MiB): 16 MiB frames for "
            f"{st['seconds_per_vector']:g} s per vector (sent: messages or connections); a member pinging "
            f"every {PING_INTERVAL * 1000:.0f} ms: at rest median {b['median_ms']} ms, p99 {b['p99_ms']} ms, "
            f"max {b['max_ms']} ms over {b['pings']} pings"
            + (
                ""
                if st["bulk_port_found"]
                else "; the bulk port was not found in the daemon's log, not attacked"
            )
            + ".",
            "",
            vectors,
            *_parallel_line(st.get("parallel")),
        ]
    )


def _parallel_line(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    hwm = "-" if p["hwm_growth_mib"] is None else f"{p['hwm_growth_mib']:.1f}"
    return [
        "",
        f"Beyond the goal (one frame): {p['vector']}, {p['sent']} connections in all: peak RSS growth "
        f"{hwm} MiB (sampled {p['sampled_growth_mib']:.1f}), pings max {p['max_ms']} ms, "
        f"{p['missed']} missed.",
    ]


def _flood_cell(f: dict[str, Any] | None) -> str:
    if f is None:
        return ""
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(f["rejected"].items())) or "none counted"
    spill = "" if f["ended_before_finalize"] else ", outlasted the round"
    return f"{f['frames']:,} frames ({f['mib']} MiB) in {f['send_s']:.2f} s{spill}; rejected: {rejected}"


def _span(rounds: list[int]) -> str:
    return f"{rounds[0]}-{rounds[-1]}" if len(rounds) > 1 else str(rounds[0])


def attack_notes(result: dict[str, Any]) -> list[str]:
    notes = [
        "The attacker never commits, so it never leads and every round has the same three honest "
        "committers; the election waits for them (min_peers 3, commit_window 1) and not for the attacker. "
        "It polls the chain every 20 ms in every round, clean or flooded, so both pay the same for it. "
        "Its own node answers at its registered endpoint: a member that does not answer costs every "
        "round about 30 s, since each daemon waits for its announce to time out before its next round "
        "(measured while writing this bench; see the report that came with it).",
        "A flood's frames are decoded after they are sent: its cost may fall into the next round "
        "(flooded rounds follow each other, so only into a flooded one); rounds are short (1 local step), "
        "so a few seconds of contention on 2 cores moves the ratio a lot: the overhead ratio and the "
        "per-round table show where the time went.",
    ]
    if result["attacker_error"]:
        notes.append(f"The attacker failed: {result['attacker_error']}.")
    dead = {"site-a", "site-b", "site-c"} - set(result["alive_after"])
    if dead:
        notes.append(f"Not running at the end: {', '.join(sorted(dead))}.")
    return notes


def attack_report(result: dict[str, Any]) -> Report:
    return Report("attack", result, attack_goals(result), format_tables(result), [], attack_notes(result))


__all__ = ["attack_goals", "attack_report", "format_tables", "run_attack_bench", "summarize"]
