"""`swarm bench transport`'s relayed transfer, for real: three libp2p peer processes on 127.0.0.1, a
private site reached only through the relay, the update delivered over the circuit and timed beside the
sealed ZeroMQ path. (The figures themselves live in docs/benchmarks.md, not here.)"""

from __future__ import annotations

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

from swarmd.bench.relay import relay_goals, run_relay_bench

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
    assert [g["goal"] for g in relay_goals(result)] == [
        "relayed / direct sealed ZeroMQ, 2 MB",
        "relay RSS growth / chunk window",
    ]
