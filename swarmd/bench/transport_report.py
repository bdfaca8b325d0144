"""`swarm bench transport`'s goals, tables and throughput plot, from the results of
`swarmd.bench.transport.transport_steps` (the payload sizes, then the relayed transfers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmd.bench.relay import relay_goals, relay_table
from swarmd.bench.report import Goal, Report, goal, pyplot, save_figure, table
from swarmd.bench.transport import MODES, result_of


def join_sizes(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from `run_transport_bench` results of one size each, and the relayed transfers'."""
    result = result_of([row for part in parts for row in part.get("rows", [])])
    relay = next((part["relay"] for part in parts if "relay" in part), None)
    links = [part["relay_link"] for part in parts if "relay_link" in part]
    if relay is not None:
        result["relay"] = relay
    if links:
        result["relay_links"] = links
    return result


def transport_goals(result: dict[str, Any]) -> list[Goal]:
    goals = []
    for r in result["rows"]:
        label = f"{r['params'] / 1e6:.0f}M"
        # The zero-copy path only makes views (its "ratio" is many times memcpy); the one-copy path, what
        # a receiver holding read-only buffers pays, is the one the goal can bind.
        codec_ratio = r["codec"]["one_copy_ratio"]
        rss = r["transfer"]["aead"]["rss_growth_ratio"]
        goals.append(
            goal(
                f"codec encode+decode (one copy) / fresh memcpy, {label}",
                codec_ratio,
                0.8,
                codec_ratio >= 0.8,
            )
        )
        goals.append(goal(f"receiver RSS growth / payload, {label}", rss, 2.0, rss < 2.0))
        if r["params"] <= 30_000_000:  # issue 15: at 7M and 30M parameters
            sealed = r["aead_vs_plain"]
            goals.append(goal(f"sealed bulk / plain ZeroMQ, {label}", sealed, 0.5, sealed >= 0.5))
    return goals


def transport_report(parts: list[dict[str, Any]], out: Path) -> Report:
    """The joined result of `transport_steps` with its goals, tables and plot (written into `out`)."""
    result = join_sizes(parts)
    tables = f"Chunks of {result['chunk_mib']} MiB.\n\n" + format_table(result)
    goals = transport_goals(result)
    if "relay" in result:
        tables += "\n\n" + relay_table(result["relay"], result.get("relay_links", []))
        goals += relay_goals(result["relay"], result.get("relay_links", []))
    return Report("transport", result, goals, tables, [transport_plot(result, out)])


# --- rendering --------------------------------------------------------------------------------------
def format_table(result: dict[str, Any]) -> str:
    """Markdown tables of `run_transport_bench`'s result."""
    codec_head = (
        "params | MB | memcpy GB/s warm / fresh | codec zero-copy / memcpy | "
        "codec one-copy / fresh memcpy | content hash GB/s"
    )
    codec_rows = [
        (
            f"{r['params'] / 1e6:.0f}M",
            r["mb"],
            f"{c['memcpy_warm_gbps']:.2f} / {c['memcpy_fresh_gbps']:.2f}",
            f"{c['zero_copy_ratio']:.1f}",
            f"{c['one_copy_ratio']:.2f}",
            f"{c['hash_gbps']:.2f}",
        )
        for r in result["rows"]
        for c in [r["codec"]]
    ]
    transfer_head = (
        "params | plain ZeroMQ GB/s | plain + copy + hash GB/s | CURVE + sealed bulk GB/s | "
        "/ plain | / plain+work | CURVE on bulk GB/s | / plain | sealed / CURVE-bulk | "
        "receiver RSS growth / payload"
    )
    transfer_rows = [
        (
            f"{r['params'] / 1e6:.0f}M",
            *(f"{t[mode]['gbps']:.2f}" for mode in ("plain", "plain_work", "aead")),
            f"{r['aead_vs_plain']:.2f}",
            f"{r['aead_vs_plain_work']:.2f}",
            f"{t['curve']['gbps']:.2f}",
            f"{r['curve_vs_plain']:.2f}",
            f"{r['aead_vs_curve']:.2f}",
            f"{t['aead']['rss_growth_ratio']:.2f}",
        )
        for r in result["rows"]
        for t in [r["transfer"]]
    ]
    cpu_head = "params | CPU s per GB moved, sender + receiver: plain | plain + work | sealed | CURVE bulk"
    cpu_rows = [
        (
            f"{r['params'] / 1e6:.0f}M",
            *(f"{t[mode].get('cpu_s_per_gb', float('nan')):.2f}" for mode in MODES),
        )
        for r in result["rows"]
        for t in [r["transfer"]]
    ]
    return (
        table(codec_head, codec_rows)
        + "\n\n"
        + table(transfer_head, transfer_rows)
        + "\n\n"
        + table(cpu_head, cpu_rows)
    )


def transport_plot(result: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    labels = {
        "plain": "plain ZeroMQ",
        "plain_work": "plain + copy + hash",
        "aead": "CURVE + AEAD bulk",
        "curve": "CURVE bulk",
    }
    rows = result["rows"]
    modes = [m for m in rows[0]["transfer"] if all(m in r["transfer"] for r in rows)]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        ax.bar(
            [x + i * width for x in range(len(rows))],
            [r["transfer"][mode]["gbps"] for r in rows],
            width,
            label=labels[mode],
        )
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(rows))], [f"{r['params'] / 1e6:.0f}M" for r in rows]
    )
    ax.set_ylabel("GB/s (loopback)")
    ax.set_title("update transfer throughput")
    ax.legend()
    return save_figure(fig, out / "transport_throughput.png")
