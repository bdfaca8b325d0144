"""`swarmd.bench.transport` and `transport_report`: how per-size runs are joined, the goals judged and
the tables rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmd.bench.transport import SIZES, transport_steps
from swarmd.bench.transport_report import join_sizes, transport_goals, transport_report


def _part(params: int, one_copy: float, rss: float, aead_vs_plain: float) -> dict[str, Any]:
    modes = ("plain", "plain_work", "aead", "curve")
    row = {
        "params": params,
        "mb": round(params * 4 / 1e6, 1),
        "codec": {
            "memcpy_warm_gbps": 5.1,
            "memcpy_fresh_gbps": 2.2,
            "zero_copy_ratio": 40.0,
            "one_copy_ratio": one_copy,
            "hash_gbps": 1.7,
        },
        "transfer": {
            m: {"gbps": 1.0 + i, "cpu_s_per_gb": 0.5 + i, "rss_growth_ratio": rss}
            for i, m in enumerate(modes)
        },
        "aead_vs_plain": aead_vs_plain,
        "curve_vs_plain": 0.7,
        "aead_vs_plain_work": 0.9,
        "aead_vs_curve": 1.1,
    }
    return {"rows": [row], "chunk_mib": 4, "median_aead_vs_plain": aead_vs_plain}


def test_join_keeps_every_row_and_takes_the_median_across_sizes() -> None:
    parts = [
        _part(7_000_000, 0.9, 1.5, 0.5),
        _part(30_000_000, 0.9, 1.5, 0.9),
        _part(100_000_000, 0.9, 1.5, 0.6),
    ]
    result = join_sizes(parts)
    assert [r["params"] for r in result["rows"]] == [7_000_000, 30_000_000, 100_000_000]
    assert result["chunk_mib"] == 4 and result["median_aead_vs_plain"] == 0.6


def test_goals_bind_the_one_copy_codec_path_the_receiver_memory_and_sealed_throughput() -> None:
    goals = transport_goals(join_sizes([_part(7_000_000, 0.8, 2.0, 0.5), _part(100_000_000, 0.8, 1.0, 0.4)]))
    assert [(g["goal"], g["met"]) for g in goals] == [
        ("codec encode+decode (one copy) / fresh memcpy, 7M", True),  # at the limit: met
        ("receiver RSS growth / payload, 7M", False),  # at the limit: missed (strictly below 2)
        ("sealed bulk / plain ZeroMQ, 7M", True),  # issue 15's goal, at 7M and 30M only
        ("codec encode+decode (one copy) / fresh memcpy, 100M", True),
        ("receiver RSS growth / payload, 100M", True),
    ]


def test_report_renders_codec_and_transfer_tables_and_the_plot(tmp_path: Path) -> None:
    report = transport_report([_part(7_000_000, 0.95, 1.5, 0.5)], tmp_path)
    assert report.tables.startswith("Chunks of 4 MiB.\n\n| params | MB | memcpy GB/s warm / fresh |")
    assert "| 7M | 28.0 | 5.10 / 2.20 | 40.0 | 0.95 | 1.70 |" in report.tables
    assert "| 7M | 1.00 | 2.00 | 3.00 | 0.50 | 0.90 | 4.00 | 0.70 | 1.10 | 1.50 |" in report.tables
    assert "| 7M | 0.50 | 1.50 | 2.50 | 3.50 |" in report.tables  # CPU s per GB: plain, +work, sealed, CURVE
    assert [p.name for p in report.plots] == ["transport_throughput.png"] and report.plots[0].exists()


def test_steps_run_one_size_each_then_the_relayed_transfer_then_each_link() -> None:
    full = [label for label, _ in transport_steps(quick=False)]
    assert full[len(SIZES) :] == [
        "relayed transfer (libp2p)",
        "relayed transfer over 100mbit links",
        "relayed transfer over 1gbit links",
    ]
    quick = [label for label, _ in transport_steps(quick=True)]
    assert quick == ["7M parameters", "relayed transfer (libp2p)"]  # no namespaces in the bounded run
    assert len(transport_steps(relay_links=())) == len(SIZES) + 1


RELAY = {
    "mb": 28.0, "path": "relayed", "relayed_mb_s": 20.0, "relayed_seconds": [1.4, 1.5],
    "direct_sealed_mb_s": 600.0, "relayed_vs_direct": 0.0333, "relay_rss_growth_mb": 3.0, "window_mb": 16.8,
    "relay_rss_vs_window": 0.18,
}  # fmt: skip


def _link(rate_bps: int, relayed: float, direct: float) -> dict[str, object]:
    return {
        **RELAY, "rate_bps": rate_bps, "relayed_mb_s": relayed, "relayed_seconds": [28 / relayed],
        "direct_sealed_mb_s": direct, "direct_seconds": [28 / direct], "relayed_vs_direct": relayed / direct,
    }  # fmt: skip


def test_the_relayed_transfer_is_judged_on_each_shaped_link_and_told_beside_the_sizes(tmp_path: Path) -> None:
    links = [_link(10**8, 11.0, 11.6), _link(10**9, 20.0, 104.0)]
    parts = [_part(7_000_000, 0.95, 1.5, 0.5), {"relay": RELAY}, *({"relay_link": r} for r in links)]
    report = transport_report(parts, tmp_path)
    judged = {g["goal"]: g["met"] for g in report.goals}
    assert judged["relayed / direct sealed ZeroMQ, 28 MB, 100mbit links"] is True  # 0.95
    assert judged["relayed / direct sealed ZeroMQ, 28 MB, 1gbit links"] is False  # 0.19
    assert "relayed / direct sealed ZeroMQ, 28 MB" not in judged  # loopback: CPU against CPU, told only
    for where in ("127.0.0.1", "100mbit links", "1gbit links"):
        assert judged[f"relay RSS growth / chunk window, {where}"] is True
    assert "28 MB in 1.40 s, 20.0 MB/s, against 600.0 MB/s sealed ZeroMQ (0.0333 x" in report.tables
    assert "| 100mbit | relayed | 2.55 | 11.0 | 2.41 | 11.6 | 0.95 | 3.0 |" in report.tables
    assert "| 1gbit | relayed | 1.40 | 20.0 | 0.27 | 104.0 | 0.19 | 3.0 |" in report.tables


def test_a_skipped_relayed_transfer_says_why_and_judges_nothing(tmp_path: Path) -> None:
    no_extra = {"relay": {"skipped": "no extra"}}
    no_netns = {"relay_link": {"skipped": "not root", "rate_bps": 10**8}}
    skipped = transport_report([_part(7_000_000, 0.95, 1.5, 0.5), no_extra, no_netns], tmp_path)
    assert "Relayed transfer: skipped: no extra" in skipped.tables
    assert "Relayed transfer over 100mbit links: skipped: not root" in skipped.tables
    assert not [g for g in skipped.goals if "relay" in g["goal"]]
