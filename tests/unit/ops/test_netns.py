"""`swarmd.ops.netns`'s pure parts: rates, the tc command lines, names and stale-run detection, and
/proc/net/dev parsing. The namespaces themselves are built in tests/integration/test_netns_shaping.py."""

from __future__ import annotations

import pytest

from swarmd.errors import UsageError
from swarmd.ops.netns import (
    MIN_BURST,
    NetnsError,
    Node,
    burst_bytes,
    format_rate,
    new_tag,
    ns_name,
    parse_net_dev,
    parse_rate,
    parse_tbf_stats,
    stale_namespaces,
    tbf_argv,
)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100mbit", 10**8),
        ("1gbit", 10**9),
        ("1Gbit", 10**9),
        ("2.5mbit", 2_500_000),
        ("800kbit", 800_000),
        ("64", 64),
    ],
)
def test_rates_are_tc_units(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["", "fast", "0mbit", "-1mbit", "10mbps", "1 tbit"])
def test_a_bad_rate_is_a_usage_error_with_an_example(text: str) -> None:
    with pytest.raises(UsageError, match="not a link rate") as err:
        parse_rate(text)
    assert err.value.hint and "100mbit" in err.value.hint


def test_format_rate_round_trips() -> None:
    for bps in (10**8, 10**9, 2_500_000, 800_000, 1234):
        assert parse_rate(format_rate(bps)) == bps
    assert format_rate(10**9) == "1gbit" and format_rate(10**8) == "100mbit"


def test_the_bucket_holds_10ms_of_the_rate_and_at_least_a_few_packets() -> None:
    assert burst_bytes(10**9) == 1_250_000
    assert burst_bytes(10**8) == 125_000
    assert burst_bytes(10**6) == MIN_BURST


def test_tbf_shapes_one_device_in_one_namespace() -> None:
    argv = tbf_argv("swan1x00aa-s0", "eth0", 10**8)
    assert argv[:8] == ["tc", "-n", "swan1x00aa-s0", "qdisc", "replace", "dev", "eth0", "root"]
    opts = dict(zip(argv[8 + 1 :: 2], argv[8 + 2 :: 2], strict=True))
    assert argv[8] == "tbf"
    assert opts == {"rate": "100000000bit", "burst": "125000", "limit": str(125_000 + 625_000)}


def test_names_carry_the_owner_pid_and_differ_between_runs() -> None:
    a = new_tag(4242)
    assert a.startswith("swan4242x") and len(a) == len("swan4242x") + 4
    assert len({new_tag(4242) for _ in range(20)}) > 1  # the random part keeps two runs of one pid apart
    assert ns_name(a, "s0") == f"{a}-s0"
    assert Node("s0", ns_name(a, "s0"), "10.203.0.3", "v1", None).argv(["true"]) == [
        "ip", "netns", "exec", f"{a}-s0", "true",
    ]  # fmt: skip


def test_stale_namespaces_are_those_of_dead_runs_only() -> None:
    names = ["swan10x0a0b-hub", "swan10x0a0b-s0", "swan20x1c2d-hub", "other", "swan30xzzzz-hub", "swan-x"]
    assert stale_namespaces(names, alive={20}) == ["swan10x0a0b-hub", "swan10x0a0b-s0"]
    assert stale_namespaces(names, alive={10, 20}) == []


def test_net_dev_gives_rx_and_tx_bytes_per_interface() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
        "colls carrier compressed\n"
        "    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0 "
        "    0       0          0\n"
        "  eth0: 29123456   20000    0    0    0     0          0         0  6100000    9000    0    0    0 "
        "    0       0          0\n"
    )
    assert parse_net_dev(text) == {"lo": (120, 120), "eth0": (29_123_456, 6_100_000)}


def test_tbf_statistics_give_what_was_sent_and_dropped() -> None:
    text = (
        "qdisc tbf 8003: root refcnt 3 rate 100Mbit burst 125000b lat 50ms \n"
        " Sent 58123456 bytes 40100 pkt (dropped 12, overlimits 900 requeues 0) \n"
        " backlog 0b 0p requeues 0\n"
    )
    assert parse_tbf_stats(text) == {"sent_bytes": 58_123_456, "sent_packets": 40_100, "dropped": 12}
    with pytest.raises(NetnsError, match="no qdisc statistics"):
        parse_tbf_stats("qdisc noqueue 0: root refcnt 2")
