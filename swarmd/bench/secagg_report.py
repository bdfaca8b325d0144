"""`swarm bench secagg`'s goals, tables and plot, from `swarmd.bench.secagg.run_secagg_bench`'s result.

The goals are issue 12's Performance section: bytes on the wire per round with secure aggregation
<= 1.2 x plain at every N, round overhead <= 1.5 x plain's at N = 3 and 8, leader RSS growth <= 3 x
the model, and the dropout run's round finalized with the FedAvg sum within the fixed-point step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmd.bench.report import Goal, Report, goal, num, pyplot, save_figure, table
from swarmd.bench.secagg import SECAGG_CATEGORIES

BYTES_LIMIT = 1.2  # secure / plain bytes on the wire per round
OVERHEAD_LIMIT = 1.5  # secure / plain round overhead
OVERHEAD_SIZES = (3, 8)
LEADER_RSS_LIMIT = 3.0  # leader RSS growth / model size


def secagg_report(result: dict[str, Any], out: Path) -> Report:
    """`run_secagg_bench`'s result with its goals, tables and plot (written into `out`)."""
    plot = secagg_plot(result, out / "secagg_breakdown.png")
    return Report("secagg", result, secagg_goals(result), format_tables(result), [plot], secagg_notes(result))


def secagg_goals(result: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    for p in result["pairs"]:
        n = p["sites"]
        goals.append(
            goal(
                f"bytes on the wire per round, secure / plain, N={n}",
                p["bytes_ratio"],
                BYTES_LIMIT,
                p["bytes_ratio"] <= BYTES_LIMIT,
                f"ZeroMQ frames; with the round transactions: {p['bytes_with_chain_ratio']}",
            )
        )
    for p in result["pairs"]:
        if p["sites"] in OVERHEAD_SIZES:
            goals.append(
                goal(
                    f"round overhead, secure / plain, N={p['sites']}",
                    p["overhead_ratio"],
                    OVERHEAD_LIMIT,
                    p["overhead_ratio"] <= OVERHEAD_LIMIT,
                )
            )
    for p in result["pairs"]:
        ratio = p["leader_rss_ratio_max"]
        goals.append(
            goal(
                f"leader RSS growth / model size with secure aggregation, N={p['sites']} (max over rounds)",
                ratio,
                LEADER_RSS_LIMIT,
                ratio <= LEADER_RSS_LIMIT,
            )
        )
    d = result.get("dropout")
    if d:
        ok = d["killed_included"] and d["error_over_step"] <= 1.0
        goals.append(
            goal(
                f"dropout: N={d['sites']}, {d['kill']} SIGKILLed after delivering: finalized, "
                "max abs(merged - FedAvg) / fixed-point step",
                d["error_over_step"],
                1.0,
                ok,
                f"killed sites in the sum: {d['killed_included']}",
            )
        )
    return goals


def secagg_notes(result: dict[str, Any]) -> list[str]:
    notes = []
    for p in result["pairs"]:
        extra = p["extra_overhead_s"]
        top = max(extra, key=lambda k: extra[k])
        notes.append(
            f"N={p['sites']}: secure aggregation adds {num(p['extra_wire_bytes_per_round'])} bytes per round "
            f"on ZeroMQ ({(p['bytes_ratio'] - 1) * 100:.2f} %) and {num(p['extra_chain_bytes_per_round'])} "
            f"bytes of transactions; overhead {p['plain']['overhead_s']:.2f} -> "
            f"{p['secure']['overhead_s']:.2f} s, most of the difference in {top} ({extra[top]:+.2f} s)."
        )
    return notes


# --- rendering --------------------------------------------------------------------------------------
def format_tables(result: dict[str, Any]) -> str:
    parts = [
        f"{result['rounds']} rounds of 1 local step per run, instant blocks, {result['cores']} cores; "
        f"{result['repeats']} run(s) of each mode at each N, back to back (ABBA order); time means over "
        "rounds >= 1 of every run.",
        "",
        "Bytes per round (ZeroMQ: every frame the daemons sent; chain: the round's signed transactions):",
        "",
        _bytes_table(result["pairs"]),
        "",
        "Round overhead on the critical path (seconds; `mask` is the last committer's TRAIN phase beyond "
        "the trainer's own time):",
        "",
        _time_table(result["pairs"]),
    ]
    d = result.get("dropout")
    if d:
        parts += ["", "Dropout run:", "", _dropout_table(d)]
    return "\n".join(parts)


def _bytes_table(pairs: list[dict[str, Any]]) -> str:
    head = (
        "N",
        "model MB",
        "plain ZMQ MB",
        "secure ZMQ MB",
        "ratio",
        "plain chain txs / bytes",
        "secure chain txs / bytes",
        "ratio with chain",
    )
    rows = []
    for p in pairs:
        pl, se = p["plain"], p["secure"]
        rows.append(
            (
                p["sites"],
                f"{p['model_bytes'] / 1e6:.1f}",
                f"{pl['wire_bytes_per_round'] / 1e6:.2f}",
                f"{se['wire_bytes_per_round'] / 1e6:.2f}",
                f"{p['bytes_ratio']:.4f}",
                f"{pl['chain_txs_per_round']:g} / {num(pl['chain_bytes_per_round'])}",
                f"{se['chain_txs_per_round']:g} / {num(se['chain_bytes_per_round'])}",
                f"{p['bytes_with_chain_ratio']:.4f}",
            )
        )
    return table(head, rows)


def _time_table(pairs: list[dict[str, Any]]) -> str:
    head = ("N", "mode", "cycle s", "train s", "overhead s", *SECAGG_CATEGORIES, "leader RSS / model")
    rows = []
    for p in pairs:
        for mode in ("plain", "secure"):
            r = p[mode]
            rows.append(
                (
                    p["sites"],
                    mode,
                    f"{r['cycle_s']:.2f}",
                    f"{r['train_s']:.2f}",
                    f"{r['overhead_s']:.2f}",
                    *(f"{r['categories'][k]:.2f}" for k in SECAGG_CATEGORIES),
                    f"{r['leader_rss_ratio_max']:.2f}",
                )
            )
        rows.append((p["sites"], "secure / plain", "", "", f"**{p['overhead_ratio']:.2f}**", *[""] * 7))
    return table(head, rows)


def _dropout_table(d: dict[str, Any]) -> str:
    head = (
        "N",
        "round",
        "leader",
        "held (SIGSTOP)",
        "killed (SIGKILL)",
        "included",
        "recovered",
        "finalize after resume s",
        "max abs error",
        "fixed-point step",
    )
    row = (
        d["sites"],
        d["round"],
        d["leader"],
        d["holdout"],
        ", ".join(d["killed"]),
        f"{len(d['included'])} of {d['committers']}",
        ", ".join(d["recovered"]) or "none",
        f"{d['finalize_after_resume_s']:.1f}",
        f"{d['max_abs_error']:.3g}",
        f"{d['step']:.3g}",
    )
    return table(head, [row])


def secagg_plot(result: dict[str, Any], path: Path) -> Path:
    """Stacked overhead bars, plain beside secure at each N."""
    plt = pyplot()
    labels, rows = [], []
    for p in result["pairs"]:
        for mode in ("plain", "secure"):
            labels.append(f"N={p['sites']}\n{mode}")
            rows.append(p[mode])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows)), 3.8))
    bottom = [0.0] * len(rows)
    for cat in SECAGG_CATEGORIES:
        vals = [r["categories"][cat] for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=cat)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("seconds per round (overhead)")
    ax.set_title("round overhead, plain and secure aggregation")
    ax.set_ylim(0, max(bottom, default=1.0) * 1.45)
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    return save_figure(fig, path)
