"""Relayed transfer (issue 18): an update from site B to a private site C (no listening socket) through a
circuit-relay v2 reservation on site A, three `swarmd.bench.p2p_peer` processes on 127.0.0.1, against
the sealed ZeroMQ path between two processes for the same payload; and the relay's RSS growth while it
carries the stream, against the chunk window (credit flow control must keep the relay from buffering
whole models).

Loopback, like the rest of `swarm bench transport`: the ratio is CPU against CPU (libp2p's Noise, yamux
and the relay hop in Python, against libzmq and AES-GCM), which is what bounds a relayed stream on any
link faster than a few MB/s. Skipped, with the reason, where the p2p extra is not installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import psutil

from swarmd import codec
from swarmd.bench.report import Goal, goal
from swarmd.transport import Limits

MB = 28.0  # DenseNet121's update
RELAYED_GOAL = 0.3  # relayed / direct sealed ZeroMQ throughput
RSS_GOAL = 2.0  # relay RSS growth / chunk window


class PeerProcess:
    """One `swarmd.bench.p2p_peer` process, driven by JSON lines; `wrap` prefixes its command line (e.g.
    `ip netns exec NS` to run it in a network namespace)."""

    def __init__(self, spec: dict[str, Any], wrap: Sequence[str] = (), env: dict[str, str] | None = None):
        argv = [*wrap, sys.executable, "-m", "swarmd.bench.p2p_peer", json.dumps(spec)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        try:
            self.info = self._read()
            if not self.info.get("ready"):
                raise RuntimeError(f"p2p peer did not start: {self.info}")
        except (RuntimeError, ValueError):
            self.proc.kill()  # a peer that never said ready is not left running (nor asked to quit)
            self.proc.wait()
            raise

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"p2p peer exited with {self.proc.wait(5)}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError, ValueError, OSError):
                self.ask(op="quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _PeakRss:
    """The highest RSS of a process, sampled every 20 ms while in the `with` block."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _member(name: str) -> tuple[bytes, str, str]:
    """(account key, curve key hex, account) of bench site `name`: fixed, so runs are alike. The curve key
    only names the peer, as the daemon does; no ZeroMQ socket is made with it."""
    from eth_account import Account

    key = hashlib.sha256(f"swarmd relay bench {name}".encode()).digest()
    return key, hashlib.sha256(key).hexdigest(), str(Account.from_key(key).address)


def run_relay_bench(mb: float = MB, reps: int = 2) -> dict[str, Any]:
    """Relayed B -> C seconds (best of `reps`), the direct sealed ZeroMQ rate for the same payload, and
    the relay's peak RSS growth; {"skipped": reason} without the p2p extra."""
    try:
        import libp2p  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"the p2p extra is not installed (pip install 'swarmd[p2p]'): {exc}"}
    from swarmd.bench.transport import _bench_transfer, _state

    sites = {n: _member(n) for n in "abc"}
    members: dict[str, list[Any]] = {curve: [addr, []] for _, curve, addr in sites.values()}
    peers: list[PeerProcess] = []
    try:
        spec = {"members": members, "listen": ["/ip4/127.0.0.1/tcp/0"], "relay": True}
        a = PeerProcess({**spec, "key": sites["a"][0].hex()})
        peers.append(a)
        members[sites["a"][1]][1] = a.info["addrs"]
        c = PeerProcess({"members": members, "relays": a.info["addrs"][:1], "key": sites["c"][0].hex()})
        peers.append(c)
        members[sites["c"][1]][1] = c.info["addrs"]  # its circuit address through A
        b = PeerProcess({"members": members, "key": sites["b"][0].hex()})
        peers.append(b)
        for p in peers:
            p.ask(op="peers", peers=members)
        to_c = sites["c"][1]
        warm = b.ask(op="send", to=to_c, mb=1.0)
        if not warm.get("ok"):
            raise RuntimeError(f"relayed warm-up transfer failed: {warm}")
        seconds = []
        with _PeakRss(a.proc.pid) as rss:
            for _ in range(reps):
                sent = b.ask(op="send", to=to_c, mb=mb)
                if not sent.get("ok"):
                    raise RuntimeError(f"relayed transfer failed: {sent}")
                seconds.append(float(sent["seconds"]))
        path = b.ask(op="stats")["paths"].get(to_c, {}).get("path", "?")
    finally:
        for p in reversed(peers):
            p.stop()
    payload = codec.encode(_state(int(mb * 1e6 / 4)))
    direct = _bench_transfer("aead", payload, reps)["gbps"] * 1000
    relayed = mb / min(seconds)
    window = Limits().window * Limits().chunk_size
    return {
        "mb": mb,
        "path": path,
        "relayed_mb_s": round(relayed, 2),
        "relayed_seconds": [round(s, 2) for s in seconds],
        "direct_sealed_mb_s": round(direct, 1),
        "relayed_vs_direct": round(relayed / direct, 4),
        "relay_rss_growth_mb": round((rss.peak - rss.base) / 1e6, 1),
        "window_mb": round(window / 1e6, 1),
        "relay_rss_vs_window": round((rss.peak - rss.base) / window, 2),
    }


def relay_goals(result: dict[str, Any]) -> list[Goal]:
    if "skipped" in result:
        return []
    ratio, rss = result["relayed_vs_direct"], result["relay_rss_vs_window"]
    label = f"relayed / direct sealed ZeroMQ, {result['mb']:.0f} MB"
    return [
        goal(label, ratio, RELAYED_GOAL, ratio >= RELAYED_GOAL),
        goal("relay RSS growth / chunk window", rss, RSS_GOAL, rss <= RSS_GOAL),
    ]


def relay_table(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Relayed transfer: skipped: {result['skipped']}"
    return (
        f"Relayed transfer (B -> private C through A's circuit relay, 127.0.0.1, path seen by B: "
        f"{result['path']}): {result['mb']:.0f} MB in {min(result['relayed_seconds']):.2f} s, "
        f"{result['relayed_mb_s']} MB/s, against {result['direct_sealed_mb_s']} MB/s sealed ZeroMQ "
        f"({result['relayed_vs_direct']} x); the relay's RSS grew {result['relay_rss_growth_mb']} MB "
        f"(chunk window {result['window_mb']} MB)."
    )
