"""Real network namespaces (`swarmd.ops.netns`): a transport peer binds its namespace's address and is
reached from another namespace over the bridge, and the tbf on each end of a site's veth holds both
directions of its link to the token bucket's promise: in any window, bytes <= burst + rate x window.

Skips, with the reason, where this process cannot make namespaces (not root, no iproute2, a kernel
or container that refuses). About 15-30 s, most of it two peers importing torch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import PeerProc

from swarmd.ops.netns import (
    NetnsError,
    WanNet,
    burst_bytes,
    congestion_of,
    link_counters,
    parse_tbf_stats,
)

pytestmark = pytest.mark.multiproc

SLOW = 10**7  # the site under test: 10 Mbit/s each way
FAST = 4 * 10**7  # the other site: never the bottleneck
N_PARAMS = 400_000  # a 1.6 MB update: about 1.3 s over SLOW, 50 buckets' worth


@pytest.fixture
def net(namespaces) -> Iterator[WanNet]:
    with namespaces() as wan:
        yield wan


def _windowed(pid: int, index: int, during: threading.Thread) -> list[tuple[float, float, int]]:
    """(time before the read, time after it, counter): once before `during` starts, then every 20 ms
    until it ends, and once after."""
    out = []

    def read() -> None:
        t0 = time.time()
        value = link_counters(pid)[index]
        out.append((t0, time.time(), value))

    read()
    during.start()
    while during.is_alive():
        read()
        time.sleep(0.02)
    read()
    return out


def _assert_bucket(samples: list[tuple[float, float, int]], rate_bps: int) -> int:
    """Every pair of samples moved at most burst + rate x (the longest the window can have been); returns
    the bytes moved in all."""
    burst = burst_bytes(rate_bps)
    for i, (before_i, _, vi) in enumerate(samples):
        for _, after_j, vj in samples[i + 1 :]:
            assert vj - vi <= burst + rate_bps / 8 * (after_j - before_i), (vj - vi, after_j - before_i)
    return samples[-1][2] - samples[0][2]


def _send(sender: PeerProc, to: PeerProc, out: dict[str, Any]) -> None:
    out.update(sender.call("update", peer=to.key.hex(), n_params=N_PARAMS, seed=3, timeout=60))


def test_a_peer_in_one_namespace_reaches_another_over_a_link_shaped_both_ways(net: WanNet) -> None:
    fast, slow = net.add("fast", FAST), net.add("slow", SLOW)
    peers = [PeerProc("--bind", f"tcp://{n.ip}:7000", wrap=n.argv([])) for n in (fast, slow)]
    try:
        a, b = peers
        assert a.endpoint == f"tcp://{fast.ip}:7000" and b.endpoint == f"tcp://{slow.ip}:7000"
        members = {a.key: a.endpoint, b.key: b.endpoint}
        a.set_peers(members)
        b.set_peers(members)
        for sender, receiver, pid, index in ((a, b, b.proc.pid, 0), (b, a, b.proc.pid, 1)):
            # index 0: the slow site's rx (its downlink); index 1: its tx (its uplink)
            out: dict[str, Any] = {}
            t = threading.Thread(target=_send, args=(sender, receiver, out))
            moved = _assert_bucket(_windowed(pid, index, t), SLOW)
            t.join()
            assert out["ok"] and out["verdict"]["ok"], out
            assert out["verdict"]["detail"] == out["sent"]  # decoded bit-exact on the other side
            assert moved >= N_PARAMS * 4  # the update crossed this link inside the window
    finally:
        for p in peers:
            p.close()
    qdiscs = net.qdiscs("slow")
    assert "rate 10Mbit" in qdiscs["up"] and "rate 10Mbit" in qdiscs["down"]
    assert parse_tbf_stats(qdiscs["down"])["sent_bytes"] >= N_PARAMS * 4


def test_every_namespace_runs_the_first_tcp_congestion_control_its_kernel_accepts(namespaces) -> None:
    # reno is always allowed in a namespace; a name the kernel does not know is refused and skipped
    with namespaces({"a": None, "b": 10**8}, congestion=("no_such_cc", "reno")) as wan:
        assert wan.tcp == "reno"
        assert [congestion_of(n.ns) for n in wan.nodes.values()] == ["reno", "reno"]


def test_a_tcp_congestion_control_no_namespace_may_use_is_a_named_error(namespaces) -> None:
    refused = pytest.raises(NetnsError, match=r"no TCP congestion control of \['no_such_cc'\] can be set")
    with refused, namespaces({"a": None}, congestion=("no_such_cc",)):
        pass
