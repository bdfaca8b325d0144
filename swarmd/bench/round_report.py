"""`swarm bench round`'s goals, tables and plot, from `swarmd.bench.round.run_round_bench`'s result.

Kept beside round.py (which runs the swarm and reads its journals and logs) so that measuring and
presenting can change apart. The file name carries the options that change what is measured:
round, round_block1, round_densenet264, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmd.bench.report import Goal, Report, goal, pyplot, save_figure, table
from swarmd.bench.round import CATEGORIES

DEFAULT_MODELS = ("densenet121",)
OVERHEAD_TRANSFERS = 3  # the overhead goal: at most this many times moving N models over plain ZeroMQ
SCALING_LIMIT = 2.5  # overhead at N=8 / overhead at N=3
OVERHEAD_LIMIT_S = 0.4  # issue 15: cycle - trainer call at N=3, instant blocks, sealed transfers
LEADER_RSS_LIMIT = 3.0  # leader RSS growth / model size


def round_name(block_time: float | None, models: tuple[str, ...]) -> str:
    """The report's name: 'round', plus the block time and the models when they are not the defaults."""
    name = "round" + ("" if block_time is None else f"_block{block_time:g}")
    return name + ("" if models == DEFAULT_MODELS else "_" + "_".join(models))


def round_report(result: dict[str, Any], out: Path, name: str) -> Report:
    """`run_round_bench`'s result with its goals, tables and plot (written into `out`)."""
    plot = round_plot(result, out / f"{name}_breakdown.png")
    return Report(name, result, round_goals(result), format_tables(result), [plot], result.get("notes", []))


def round_goals(result: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    for model in result["models"]:
        rows = {r["sites"]: r for r in result["rows"] if r["model"] == model}
        if 3 in rows:
            r3 = rows[3]
            limit = OVERHEAD_TRANSFERS * r3["n_models_transfer_s"]
            goals.append(
                goal(
                    f"{model}: round overhead at N=3 ≤ 3 x (3 x model bytes / plain ZeroMQ)",
                    r3["overhead_s"],
                    round(limit, 4),
                    r3["overhead_s"] <= limit,
                )
            )
            cut = r3["overhead_trainer_s"]
            goals.append(
                goal(
                    f"{model}: round overhead at N=3 (cycle - trainer call) ≤ {OVERHEAD_LIMIT_S} s",
                    cut,
                    OVERHEAD_LIMIT_S,
                    cut <= OVERHEAD_LIMIT_S,
                )
            )
        if 3 in rows and 8 in rows:
            for key, what in (
                ("overhead_trainer_s", "cycle - trainer call"),
                ("overhead_s", "cycle - TRAIN"),
            ):
                ratio = rows[8][key] / rows[3][key]
                goals.append(
                    goal(
                        f"{model}: overhead N=8 / overhead N=3 ({what})",
                        round(ratio, 2),
                        SCALING_LIMIT,
                        ratio <= SCALING_LIMIT,
                    )
                )
        for n, r in sorted(rows.items()):
            ratio = r["leader_rss_ratio_max"]
            goals.append(
                goal(
                    f"{model}: leader RSS growth / model size at N={n} (max over rounds)",
                    ratio,
                    LEADER_RSS_LIMIT,
                    ratio <= LEADER_RSS_LIMIT,
                )
            )
    return goals


# --- rendering --------------------------------------------------------------------------------------
def format_tables(result: dict[str, Any]) -> str:
    """Markdown: per N the steady-state round, its overhead breakdown and the leader's memory; per round."""
    blocks = "instant blocks" if result["block_time"] is None else f"{result['block_time']:g} s blocks"
    return "\n".join(
        [
            f"{result['rounds']} rounds of 1 local step per size, {blocks}, {result['cores']} cores; "
            "means over rounds ≥ 1 (round 0 includes start-up).",
            "",
            _size_table(result["rows"]),
            "",
            "Per round (critical path, seconds):",
            "",
            _round_table(result["rows"]),
        ]
    )


def _size_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "model",
        "N",
        "cycle s",
        "train s",
        "trainer s",
        "overhead s (- trainer)",
        "overhead s (- TRAIN)",
        *CATEGORIES,
        "plain ZMQ GB/s",
        "N models over ZMQ ms",
        "overhead / that",
        "leader RSS growth / model",
    )
    return table(
        head,
        (
            (
                f"{r['model']} ({r['params_m']}M)",
                r["sites"],
                *(
                    f"{r[k]:.2f}"
                    for k in ("cycle_s", "train_s", "trainer_s", "overhead_trainer_s", "overhead_s")
                ),
                *(f"{r['categories'][k]:.2f}" for k in CATEGORIES),
                f"{r['plain_zmq_gbps']:.2f}",
                f"{r['n_models_transfer_s'] * 1000:.0f}",
                r["overhead_vs_transfer"],
                f"{r['leader_rss_ratio_max']:.2f}",
            )
            for r in rows
        ),
    )


def _round_table(rows: list[dict[str, Any]]) -> str:
    parts = ("commit", "elect", "finalize")
    categories = ("exchange", "merge", "dissemination", "waiting")
    head = ("model", "N", "round", "cycle", "train", "trainer", "overhead", *parts, *categories, "leader")
    return table(
        head,
        (
            (
                r["model"],
                r["sites"],
                c["round"],
                f"{c['cycle_s']:.2f}",
                f"{c['train_s']:.2f}",
                f"{c['trainer_s']:.2f}",
                f"{c['overhead_trainer_s']:.2f}",
                *(f"{c['parts'][k]:.2f}" for k in parts),
                *(f"{c['categories'][k]:.2f}" for k in categories),
                c["leader"],
            )
            for r in rows
            for c in r["cycles"]
        ),
    )


def round_plot(result: dict[str, Any], path: Path) -> Path:
    """Stacked bars: the steady-state overhead breakdown per N (and model), training beside it."""
    plt = pyplot()
    rows = result["rows"]
    labels = [f"N={r['sites']}" + ("" if len(result["models"]) == 1 else f"\n{r['model']}") for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    bottom = [0.0] * len(rows)
    for cat in CATEGORIES:
        vals = [r["categories"][cat] for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=cat)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.scatter(
        labels,
        [OVERHEAD_TRANSFERS * r["n_models_transfer_s"] for r in rows],
        marker="_",
        s=400,
        color="red",
        label="3 x N models over plain ZMQ",
        zorder=3,
    )
    ax.set_ylabel("seconds per round (overhead)")
    ax.set_title("round overhead, critical path")
    ax.set_ylim(0, max(bottom) * 1.45)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax2.bar(labels, [r["train_s"] for r in rows], color="tab:gray")
    ax2.set_title("local training (1 step), same run")
    ax2.set_ylabel("seconds")
    return save_figure(fig, path)
