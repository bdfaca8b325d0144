"""`swarm bench transport`'s relayed transfer, for real: three libp2p peer processes (on 127.0.0.1, and
in network namespaces joined by shaped links), a private site reached only through the relay, the
update delivered over the circuit and timed beside the sealed ZeroMQ path. (The figures themselves live
in docs/benchmarks.md, not here.)"""

from __future__ import annotations

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

from swarmd.bench.relay import relay_goals, run_relay_bench, run_relay_link_bench

pytestmark = pytest.mark.multiproc


def test_the_relayed_bench_moves_an_update_through_the_relay_and_judges_it() -> None:
    result = run_relay_bench(mb=2.0, reps=1)
    assert result["path"] == "relayed"  # as the sender saw it: not a direct connection to the private site
    assert (
        result["relayed_mb_s"] > 0
        and result["direct_sealed_mb_s"] > 0
        and len(result["relayed_seconds"]) == 1
    )
    assert result["relayed_vs_direct"] == pytest.approx(
        result["relayed_mb_s"] / result["direct_sealed_mb_s"], rel=0.01
    )
    assert [g["goal"] for g in relay_goals(result)] == ["relay RSS growth / chunk window, 127.0.0.1"]


def test_the_relayed_bench_on_shaped_links_crosses_them_both_ways_it_compares(namespaces) -> None:
    """Between namespaces at 100 Mbit/s each way: both the relayed and the direct ZeroMQ transfer went
    over the shaped links (neither is faster than the link), through the relay, and are judged."""
    with namespaces() as net:
        result = run_relay_link_bench(10**8, mb=2.0, reps=1, net=net)
    assert result["path"] == "relayed" and result["rate_bps"] == 10**8
    link_mb_s = 10**8 / 8 / 1e6  # 12.5 MB/s
    # a 2 MB transfer may ride the token bucket's burst (10 ms of the rate) and the 50 ms queue
    assert (
        0 < result["relayed_mb_s"] <= 1.2 * link_mb_s and 0 < result["direct_sealed_mb_s"] <= 1.2 * link_mb_s
    )
    assert [g["goal"] for g in relay_goals({"skipped": "-"}, [result])] == [
        "relayed / direct sealed ZeroMQ, 2 MB, 100mbit links",
        "relay RSS growth / chunk window, 100mbit links",
    ]
