"""`swarmd.bench.wan` and `wan_report`: the wire floors, byte counters read at a cycle's bounds, a
round's row from journals and counter samples, the CPU's share of the overhead window, and the report
built from it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from swarmd.bench.wan import (
    CHAIN_PORT,
    HOST,
    Sample,
    _Run,
    at,
    cpu_busy,
    full_seconds,
    point_at_chain,
    summarize,
    window_bytes,
    wire_floor_bytes,
    wire_floor_s,
)
from swarmd.bench.wan_report import wan_goals, wan_name, wan_report, with_baseline
from swarmd.config import load_config, parse_config, write_config
from swarmd.daemon.store import RoundRecord

M = 28_000_000


def test_the_leader_floor_is_n_minus_1_models_in_plus_one_out() -> None:
    assert wire_floor_bytes("leader", 3, M) == 3 * M
    assert wire_floor_bytes("leader", 3, M, disseminate=False) == 2 * M
    assert wire_floor_bytes("leader", 8, M) == 8 * M
    # N=8 at 100 Mbit/s: the "about 16 s of exchange before dissemination".
    assert wire_floor_s("leader", 8, M, 10**8, disseminate=False) == pytest.approx(15.68)


def test_the_sharded_floor_is_two_n_minus_1_over_n_models() -> None:
    assert wire_floor_bytes("sharded", 8, M) == pytest.approx(2 * 7 / 8 * M)
    assert wire_floor_s("sharded", 3, M, 10**9) == pytest.approx(4 / 3 * M * 8 / 1e9)
    with pytest.raises(ValueError, match="unknown topology"):
        wire_floor_bytes("ring", 3, M)


SAMPLES: list[Sample] = [
    (10.0, {"site-a": (0, 0)}),
    (11.0, {"site-a": (1000, 100), "chain": (5, 5)}),
    (13.0, {"site-a": (3000, 300), "chain": (9, 9)}),
]


def test_counters_are_interpolated_between_samples_and_clamped_at_the_ends() -> None:
    assert at(SAMPLES, "site-a", 12.0) == (2000.0, 200.0)
    assert at(SAMPLES, "site-a", 9.0) == (0.0, 0.0)
    assert at(SAMPLES, "site-a", 99.0) == (3000.0, 300.0)
    assert window_bytes(SAMPLES, "site-a", 10.5, 12.0) == {"in": 1500, "out": 150}
    assert window_bytes(SAMPLES, "chain", 0.0, 99.0) == {"in": 4, "out": 4}


def test_a_link_is_full_in_the_intervals_where_either_direction_ran_near_its_rate() -> None:
    rate = 8_000  # bits per second: 1000 bytes a second
    samples: list[Sample] = [
        (0.0, {"s": (0, 0)}),
        (1.0, {"s": (900, 0)}),  # in at 90 %: full
        (2.0, {"s": (1_200, 100)}),  # 30 % / 10 %: not full
        (4.0, {"s": (1_200, 1_900)}),  # out at 90 %: full
    ]
    assert full_seconds(samples, "s", 0.0, 4.0, rate) == pytest.approx(3.0)
    assert full_seconds(samples, "s", 0.5, 3.0, rate) == pytest.approx(1.5)  # clipped to the window
    assert full_seconds(samples, "s", 1.0, 2.0, rate) == 0.0
    assert full_seconds(samples, "absent", 0.0, 4.0, rate) == 0.0


def _journals() -> dict[str, dict[int, RoundRecord]]:
    """Two sites, one round: site-a leads (receives site-b's update), finalizes at t=20."""
    a = {"sync": 10.0, "train": 10.5, "commit": 12.0, "elect": 12.2, "exchange": 12.3, "merge": 15.0}
    a |= {"finalize": 15.2, "disseminate": 20.0}
    b = {"sync": 10.0, "train": 10.5, "commit": 11.5, "elect": 11.6, "exchange": 12.4, "disseminate": 20.5}
    return {
        "site-a": {0: RoundRecord(0, entered=a, led=True, model_bytes=M, train_seconds=1.2)},
        "site-b": {0: RoundRecord(0, entered=b, model_bytes=M, train_seconds=0.9)},
    }


def test_a_round_row_holds_overhead_floor_and_each_sites_wire_bytes() -> None:
    samples: list[Sample] = [
        (10.0, {"site-a": (0, 0), "site-b": (0, 0), "chain": (0, 0)}),
        (20.0, {"site-a": (M + 10**6, 10**5), "site-b": (10**5, M + 10**6), "chain": (10**4, 10**4)}),
    ]
    out = summarize(_journals(), samples, sites=2, rounds=1, rate_bps=10**8)
    (c,) = out["cycles"]
    assert c["leader"] == "site-a" and c["cycle_s"] == pytest.approx(10.0)
    assert c["overhead_s"] == pytest.approx(10.0 - 1.5)  # cycle - the last committer's TRAIN phase
    assert c["overhead_trainer_s"] == pytest.approx(10.0 - 1.2)
    assert c["floor_s"] == pytest.approx(M * 8 / 1e8, abs=1e-3)  # round 0: no dissemination
    assert c["overhead_vs_floor"] == pytest.approx(8.5 / (M * 8 / 1e8), abs=0.01)
    assert c["bytes"]["site-a"] == {"in": M + 10**6, "out": 10**5}
    assert c["busiest_link_vs_floor"] == pytest.approx((M + 10**6) / M, abs=1e-3)
    # 29 MB in over the 10 s between the samples is 23 Mbit/s against 100: never full
    assert c["link_full_s"] == {"site-a": 0.0, "site-b": 0.0}
    assert out["model_bytes"] == M and out["steady_rounds"] == [0]
    result = {"sites": 2, "rate": "100mbit", "model": "densenet121", "rounds": 1, "topology": "leader"}
    tbf = {
        s: {key: {"sent_bytes": 10**6, "dropped": 3} for key in ("up", "down")} for s in ("site-a", "site-b")
    }
    report = wan_report({**result, "cores": 2, "load_at_start": 1.5, "tbf": tbf, **out})
    assert report.name == wan_name(2, "100mbit", "densenet121") == "wan_n2_100mbit"
    assert "| 0 | 29.0 / 0.1 | 0.1 / 29.0 |" in report.tables
    assert "| site-a | 1.0 / 3 | 1.0 / 3 |" in report.tables and "(load 1.5 at start)" in report.tables
    (g,) = wan_goals({**result, **out})
    assert g["limit"] == 1.3 and not g["met"]


def test_the_sharded_run_is_reported_next_to_the_leader_run_before_it() -> None:
    samples: list[Sample] = [
        (10.0, {"site-a": (0, 0), "site-b": (0, 0), "chain": (0, 0)}),
        (20.0, {"site-a": (M, M), "site-b": (M, M), "chain": (10**4, 10**4)}),
    ]
    base = {"rate": "100mbit", "model": "densenet121", "rounds": 1, "cores": 2, "load_at_start": 1.5}
    tbf = {s: {k: {"sent_bytes": 1, "dropped": 0} for k in ("up", "down")} for s in ("site-a", "site-b")}
    runs = []
    for topology in ("leader", "sharded"):
        rows = summarize(_journals(), samples, sites=2, rounds=1, rate_bps=10**8, topology=topology)
        runs.append({**base, "sites": 2, "topology": topology, "wall_s": 30.0, "tbf": tbf, **rows})
    runs[0]["overhead_s"] = 17.0  # the leader run's, twice the sharded one's
    result = with_baseline(runs)
    assert result["topology"] == "sharded" and [b["topology"] for b in result["baselines"]] == ["leader"]
    report = wan_report(result)
    assert report.name == "wan_n2_100mbit_sharded"
    assert "| sharded | 8.50 |" in report.tables and "| 0.50 | 1.5 |" in report.tables
    assert len(report.goals) == 1  # the sharded-vs-leader goal is set at N = 8, 100 Mbit/s only
    at8 = {**result, "sites": 8}
    (_, vs) = wan_goals(at8)
    assert vs["limit"] == 0.35 and vs["value"] == 0.5 and not vs["met"]


def test_a_site_reaches_the_chain_and_its_new_heads_at_the_chain_namespace_address(tmp_path) -> None:
    # As provisioned: both URLs on the loopback anvil, which a site's namespace cannot reach.
    provisioned = {
        "schema": 1,
        "site": {"name": "site-a", "state_dir": "state", "task": "swarm.toml"},
        "identity": {"keystore": "k.json", "passphrase_file": "pass", "curve_secret": "curve.key"},
        "chain": {"rpc_url": "http://127.0.0.1:8545", "ws_url": "ws://127.0.0.1:8545"},
        "transport": {"bind": "tcp://10.203.0.2:7700", "endpoint": "tcp://10.203.0.2:7700"},
    }
    path = write_config(parse_config(provisioned, tmp_path, env={}), tmp_path / "site.toml")
    point_at_chain(path, "10.203.0.9")
    chain = load_config(path, env={}).chain
    assert chain.rpc_url == f"http://10.203.0.9:{CHAIN_PORT}"
    assert chain.ws_url == f"ws://10.203.0.9:{CHAIN_PORT}"  # pushed heads, not polling


def test_the_cpu_share_of_a_rounds_overhead_window_is_in_its_row_and_the_report() -> None:
    samples: list[Sample] = [
        (10.0, {"site-a": (0, 0), "site-b": (0, 0), "chain": (0, 0)}),
        (20.0, {"site-a": (M, 0), "site-b": (0, M), "chain": (0, 0)}),
    ]
    # 1.9 of 2 cores busy throughout, the swarm's processes using 1 of them
    cpu: list[Sample] = [
        (10.0, {HOST: (80.0, 20.0), "site-a": (3.0, 1.0), "chain": (1.0, 0.0)}),
        (20.0, {HOST: (92.0, 27.0), "site-a": (9.0, 3.0), "chain": (3.0, 0.0)}),
    ]
    out = summarize(_journals(), samples, sites=2, rounds=1, rate_bps=10**8, cpu=cpu, cores=2)
    (c,) = out["cycles"]
    # the window: the last committer's TRAIN phase done (11.5) to the finalize (20)
    assert c["cpu"]["host_busy"] == pytest.approx(0.95)
    assert c["cpu"]["processes_s"] == {"chain": pytest.approx(1.7), "site-a": pytest.approx(6.8)}
    assert c["cpu"]["swarm_s"] == pytest.approx(8.5)
    assert out["host_busy"] == pytest.approx(0.95)
    assert cpu_busy(cpu, 12.0, 12.0, 2) == {}  # an empty window
    assert summarize(_journals(), samples, sites=2, rounds=1, rate_bps=10**8)["host_busy"] is None
    result = {"sites": 2, "rate": "100mbit", "model": "densenet121", "rounds": 1, "topology": "leader"}
    tbf = {s: {k: {"sent_bytes": 1, "dropped": 0} for k in ("up", "down")} for s in ("site-a", "site-b")}
    report = wan_report({**result, "cores": 2, "load_at_start": 0.5, "tbf": tbf, **out})
    assert "| 0 | 8.50 | 17.00 | 95 | 8.50 | 1.70 | 6.80 |" in report.tables
    assert "cores busy in the overhead 95 %" in report.tables


def test_the_cpu_sample_counts_a_busy_process_and_keeps_its_seconds_after_it_exits() -> None:
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    run = _Run(net=None, chain=None, sites=[], consortium=None, daemons=[], anvil=proc)  # type: ignore[arg-type]
    t0, first = run.cpu_sample()
    time.sleep(0.5)
    t1, spinning = run.cpu_sample()
    proc.wait(30)
    t2, gone = run.cpu_sample()
    assert t0 < t1 < t2
    spun = sum(spinning["chain"]) - sum(first["chain"])
    assert spun >= 0.2  # it spun for most of the half second (an interpreter starts in ~0.05 s here)
    assert sum(spinning[HOST]) - sum(first[HOST]) >= spun - 0.05  # the host's busy time holds it
    assert gone["chain"] == spinning["chain"]  # gone: its last reading stands
    assert sum(gone[HOST]) >= sum(spinning[HOST])
