"""The stranger's 16 MiB frames to every port of a daemon, and the member that pings it meanwhile:
peak RSS (VmHWM, reset per vector) and ping delay per vector."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

if TYPE_CHECKING:
    from swarmd.ledger import Member
    from swarmd.ops.launcher import DaemonProcess
from swarmd.bench.attack.common import (
    MIB,
    PARALLEL,
    PING_INTERVAL,
    PING_TIMEOUT,
    STRANGER_FRAME,
    BenchFailed,
)
from swarmd.bench.attack.member import (
    Dealer,
)


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
