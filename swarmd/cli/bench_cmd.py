"""`swarm bench`: runs the benchmarks of `swarmd.bench` and writes what they measured.

Each subcommand writes DIR/<name>.json (the raw result wrapped with the command, the machine, the
package versions and the goals it is held against), DIR/<name>.md (Markdown tables) and PNG plots.
The measuring lives in `swarmd.bench`; this module only parses options, aggregates seeds, renders
tables and plots, and shows progress.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from swarmd.cli.common import cli_errors, console

bench_app = typer.Typer(
    help="Measure chain gas, transport, training, round overhead and learning quality.",
    no_args_is_help=True,
)

QUICK = typer.Option(False, "--quick", help="A bounded run (under ~2 minutes on 2 cores).")
OUT = typer.Option(Path("results"), "--out", help="Folder for the JSON, Markdown and PNG files.")
LEARNING_CASES = [(kind, alpha) for kind in ("classification", "segmentation") for alpha in (0.1, 1.0)]
CLEAR_GAIN = 0.05  # "clearly better" at the most skewed site: at least this much above its local-only model


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


# --- shared plumbing ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "cpu": platform.processor() or platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import zmq

    out = {"libzmq": zmq.zmq_version()}
    for pkg in ("swarmd", "torch", "monai", "pyzmq", "web3", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["swarmd_git"] = _git_revision()
    return out


def _git_revision() -> str:
    """The checkout's commit (with -dirty when the tree has changes), or 'unknown' outside git."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _goal(name: str, value: float, limit: float, met: bool, note: str = "") -> dict[str, Any]:
    return {"goal": name, "value": value, "limit": limit, "met": bool(met), "note": note}


def _goals_md(goals: list[dict[str, Any]]) -> str:
    if not goals:
        return ""
    lines = ["| goal | measured | limit | |", "|---|---|---|---|"]
    for g in goals:
        verdict = "met" if g["met"] else "**MISSED**"
        lines.append(f"| {g['goal']} | {_num(g['value'])} | {_num(g['limit'])} | {verdict} |")
    return "\n".join(lines)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


@contextmanager
def _progress() -> Iterator[Progress]:
    cols = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as progress:
        yield progress


def _steps(label: str, steps: Sequence[tuple[str, Callable[[], Any]]]) -> list[Any]:
    """Run `steps` in order under one progress bar; returns their results."""
    results = []
    with _progress() as progress:
        task = progress.add_task(label, total=len(steps))
        for desc, fn in steps:
            progress.update(task, description=f"{label}: {desc}")
            results.append(fn())
            progress.advance(task)
        progress.update(task, description=f"{label}: done")
    return results


def _write(
    out: Path,
    name: str,
    *,
    quick: bool,
    result: dict[str, Any],
    goals: list[dict[str, Any]],
    tables: str,
    plots: list[Path],
    seconds: float,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    command = "swarm bench " + " ".join(
        sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else [name]
    )
    doc: dict[str, Any] = {
        "bench": name,
        "schema": 1,
        "command": command,
        "quick": quick,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": machine(),
        "versions": versions(),
        "goals": goals,
        "notes": notes or [],
        "plots": [p.name for p in plots],
        "result": result,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    m = doc["machine"]
    md = [
        f"## {name}",
        "",
        f"`{command}` ({'quick' if quick else 'full'}, {doc['seconds']} s, {doc['finished']}), "
        f"{m['cores']} cores, {m['ram_gb']} GiB RAM, GPU: {m['gpu']}, load average at start "
        f"{m['load_avg_at_start'][0]}.",
        "",
        tables.strip(),
    ]
    if goals:
        md += ["", _goals_md(goals)]
    for note in notes or []:
        md += ["", note]
    for p in plots:
        md += ["", f"![{p.stem}]({p.name})"]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    missed = [g["goal"] for g in goals if not g["met"]]
    console.print(f"[bold]{name}[/]: wrote {out / (name + '.json')}, {name}.md, {len(plots)} plot(s)")
    if missed:
        console.print(f"[yellow]goals missed:[/] {'; '.join(missed)}")
    return doc


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _pm(values: list[float]) -> str:
    m, s = _mean_sd(values)
    return f"{m:.3f} ± {s:.3f}" if len(values) > 1 else f"{m:.3f}"


# --- chain ------------------------------------------------------------------------------------------
def chain_tables(result: dict[str, Any]) -> str:
    out = []
    for size, r in result["sizes"].items():
        out += [
            f"**{size} members**, deploy {r['deploy_ms']} ms. Per round: {r['round']['transactions']} "
            f"transactions, {r['round']['gas']:,} gas ({r['round']['gas_per_site']:,} per site), "
            f"{r['round']['blocks_quorum_to_election']} block(s) from the last commit to the election.",
            "",
            "| call | n | gas min | gas median | gas max | latency median ms | latency max ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for call, c in r["calls"].items():
            g, lat = c["gas"], c["latency_ms"]
            out.append(
                f"| {call} | {c['n']} | {g['min']:,} | {g['median']:,} | {g['max']:,} "
                f"| {lat['median']} | {lat['max']} |"
            )
        out.append("")
    return "\n".join(out)


def chain_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    at = result["goals_at_members"]
    goals = [
        _goal(f"{call} gas at {at} members (max)", g["max_gas"], g["limit"], g["met"])
        for call, g in result["goals"].items()
    ]
    r = result["sizes"][str(at)]["round"]
    goals.append(
        _goal(
            "transactions per round (one per site + two)",
            r["transactions"],
            at + 2,
            r["transactions"] <= at + 2,
        )
    )
    return goals


def chain_plot(result: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    sizes = list(result["sizes"])
    calls = list(result["sizes"][sizes[-1]]["calls"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        c = result["sizes"][size]["calls"]
        ax.bar(
            [x + i * width for x in range(len(calls))],
            [c[k]["gas"]["median"] if k in c else 0 for k in calls],
            width,
            label=f"{size} members",
        )
    for call, goal in result["goals"].items():
        x = calls.index(call)
        ax.hlines(goal["limit"], x - 0.1, x + 0.9, colors="red", linestyles="dashed")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(calls))], calls)
    ax.set_ylabel("gas (median)")
    ax.set_title("SwarmLedger gas per call (red: goal)")
    ax.legend()
    fig.tight_layout()
    path = out / "chain_gas.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@bench_app.command("chain")
def chain_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    members: int = typer.Option(8, "--members", help="The larger consortium size (3 is always run)."),
) -> None:
    """Gas and latency of every SwarmLedger call on a fresh devnet."""
    with cli_errors():
        run_chain(out, quick, members)


def run_chain(out: Path, quick: bool, members: int = 8) -> dict[str, Any]:
    from swarmd.bench.chain import run_chain_bench

    t0 = time.perf_counter()
    (result,) = _steps("chain", [(f"3 and {members} members", lambda: run_chain_bench(members, quick))])
    out.mkdir(parents=True, exist_ok=True)
    return _write(
        out,
        "chain",
        quick=quick,
        result=result,
        goals=chain_goals(result),
        tables=chain_tables(result),
        plots=[chain_plot(result, out)],
        seconds=time.perf_counter() - t0,
    )


# --- transport --------------------------------------------------------------------------------------
def transport_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []
    for r in result["rows"]:
        label = f"{r['params'] / 1e6:.0f}M"
        # The zero-copy path only makes views (its "ratio" is many times memcpy); the one-copy path, what
        # a receiver holding read-only buffers pays, is the one the goal can bind.
        codec = r["codec"]["one_copy_ratio"]
        rss = r["transfer"]["aead"]["rss_growth_ratio"]
        goals.append(
            _goal(f"codec encode+decode (one copy) / fresh memcpy, {label}", codec, 0.8, codec >= 0.8)
        )
        goals.append(_goal(f"receiver RSS growth / payload, {label}", rss, 2.0, rss < 2.0))
    return goals


def transport_plot(result: dict[str, Any], out: Path) -> Path:
    plt = _plt()
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
    fig.tight_layout()
    path = out / "transport_throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@bench_app.command("transport")
def transport_cmd(quick: bool = QUICK, out: Path = OUT) -> None:
    """Codec and encrypted transfer throughput as ratios to memcpy and plain ZeroMQ."""
    with cli_errors():
        run_transport(out, quick)


def run_transport(out: Path, quick: bool) -> dict[str, Any]:
    from swarmd.bench.transport import SIZES, format_table, run_transport_bench

    t0 = time.perf_counter()
    sizes = SIZES[:1] if quick else SIZES
    rows = _steps(
        "transport",
        [(f"{n / 1e6:.0f}M parameters", partial(run_transport_bench, (n,), quick)) for n in sizes],
    )
    result = {
        "rows": [row for r in rows for row in r["rows"]],
        "chunk_mib": rows[0]["chunk_mib"],
    }
    result["median_aead_vs_plain"] = statistics.median(r["aead_vs_plain"] for r in result["rows"])
    out.mkdir(parents=True, exist_ok=True)
    return _write(
        out,
        "transport",
        quick=quick,
        result=result,
        goals=transport_goals(result),
        tables=f"Chunks of {result['chunk_mib']} MiB.\n\n" + format_table(result),
        plots=[transport_plot(result, out)],
        seconds=time.perf_counter() - t0,
    )


# --- train ------------------------------------------------------------------------------------------
def train_tables(result: dict[str, Any]) -> str:
    lines = [
        "| bundle | device | AMP | threads | params | model MB | steps/round | ms/step | images/s "
        "| Mvoxels/s | snapshot ms | init s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['bundle']} | {r['device']} | {r['amp']} | {r['threads']} | {r['params'] / 1e6:.2f}M "
            f"| {r['model_mb']:.1f} | {r['steps_per_round']} | {r['step_ms']:.0f} | {r['images_per_s']:.1f} "
            f"| {r['voxels_per_s'] / 1e6:.2f} | {r['snapshot_ms']:.1f} | {r['init_s']:.1f} |"
        )
    return "\n".join(lines)


@bench_app.command("train")
def train_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    threads: int = typer.Option(0, "--threads", help="torch threads (0: the library default)."),
) -> None:
    """Local training throughput of the example bundles (CPU, and CUDA when present)."""
    with cli_errors():
        run_train(out, quick, threads)


def run_train(out: Path, quick: bool, threads: int = 0) -> dict[str, Any]:
    from swarmd.bench.train import run_train_bench

    t0 = time.perf_counter()
    (result,) = _steps("train", [("both example bundles", lambda: run_train_bench(quick, threads))])
    return _write(
        out,
        "train",
        quick=quick,
        result=result,
        goals=[],
        tables=train_tables(result),
        plots=[],
        seconds=time.perf_counter() - t0,
    )


# --- learning ---------------------------------------------------------------------------------------
def _metric_key(metrics: dict[str, float]) -> str:
    for key in ("auc", "roc_auc", "dice", "mean_dice", "val_auc", "val_mean_dice"):
        if key in metrics:
            return key
    names = [k for k in metrics if "loss" not in k]
    if not names:
        raise ValueError(f"no metric in {sorted(metrics)}")
    return sorted(names)[0]


def _skew(labels: list[list[int]]) -> list[float]:
    """Each site's total variation distance between its class distribution and the pooled one."""
    pooled = [sum(col) for col in zip(*labels, strict=True)]
    total = sum(pooled) or 1
    out = []
    for counts in labels:
        n = sum(counts) or 1
        out.append(0.5 * sum(abs(c / n - p / total) for c, p in zip(counts, pooled, strict=True)))
    return out


def summarize_case(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Seeds of one (task, alpha) case -> mean ± sd per arm and the three learning goals."""
    key = _metric_key(runs[0]["swarm"]["metrics"])
    swarm = [r["swarm"]["metrics"][key] for r in runs]
    central = [r["centralized"]["metrics"][key] for r in runs]
    sites = len(runs[0]["local_only"])
    local = [[r["local_only"][i]["metrics"][key] for r in runs] for i in range(sites)]
    best_local = [max(r["local_only"][i]["metrics"][key] for i in range(sites)) for r in runs]
    # The skewed site differs per seed (Dirichlet draw): take, per seed, the site furthest from the pool.
    skew_gain, skew_tv = [], []
    for r in runs:
        tv = _skew(r["site_labels"])
        i = max(range(sites), key=lambda j: tv[j])
        skew_tv.append(tv[i])
        skew_gain.append(r["swarm"]["metrics"][key] - r["local_only"][i]["metrics"][key])
    curves = [[pt.get(key, float("nan")) for pt in r["swarm"]["curve"]] for r in runs]
    return {
        "task": runs[0]["task"],
        "alpha": runs[0]["alpha"],
        "metric": key,
        "seeds": [r["seed"] for r in runs],
        "rounds": runs[0]["rounds"],
        "local_steps": runs[0]["local_steps"],
        "swarm": _mean_sd(swarm),
        "centralized": _mean_sd(central),
        "local_only": [_mean_sd(v) for v in local],
        "best_local": _mean_sd(best_local),
        "swarm_minus_central": _mean_sd([s - c for s, c in zip(swarm, central, strict=True)]),
        "swarm_minus_best_local": _mean_sd([s - b for s, b in zip(swarm, best_local, strict=True)]),
        "skewed_site_tv": _mean_sd(skew_tv),
        "skewed_site_gain": _mean_sd(skew_gain),
        "curve_mean": [_mean_sd(list(col))[0] for col in zip(*curves, strict=True)],
        "curve_sd": [_mean_sd(list(col))[1] for col in zip(*curves, strict=True)],
        "raw": {"swarm": swarm, "centralized": central, "local_only": local},
    }


def learning_goals(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []
    for c in cases:
        label = f"{c['task']} alpha={c['alpha']}"
        gap = c["swarm_minus_central"][0]
        goals.append(_goal(f"{label}: centralized - swarm ({c['metric']})", -gap, 0.02, -gap <= 0.02))
        vs_best = c["swarm_minus_best_local"][0]
        goals.append(_goal(f"{label}: swarm - best local-only site", vs_best, 0.0, vs_best >= 0.0))
        gain = c["skewed_site_gain"][0]
        goals.append(
            _goal(
                f"{label}: swarm - local-only at the most skewed site", gain, CLEAR_GAIN, gain >= CLEAR_GAIN
            )
        )
    return goals


def learning_tables(cases: list[dict[str, Any]]) -> str:
    sites = max(len(c["local_only"]) for c in cases)
    head = "| task | alpha | metric | seeds | swarm | centralized | " + " | ".join(
        f"site-{i + 1} alone" for i in range(sites)
    )
    lines = [
        head + " | swarm - best site | most skewed site: TV, swarm gain |",
        "|---" * (sites + 8) + "|",
    ]

    def pm(ms: tuple[float, float]) -> str:
        return f"{ms[0]:.3f} ± {ms[1]:.3f}"

    for c in cases:
        locs = " | ".join(pm(v) for v in c["local_only"])
        lines.append(
            f"| {c['task']} | {c['alpha']} | {c['metric']} | {len(c['seeds'])} | {pm(c['swarm'])} "
            f"| {pm(c['centralized'])} | {locs} | {pm(c['swarm_minus_best_local'])} "
            f"| {c['skewed_site_tv'][0]:.2f}, {pm(c['skewed_site_gain'])} |"
        )
    return "\n".join(lines)


def learning_plots(cases: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = _plt()
    n = len(cases)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, c in zip(axes[0], cases, strict=True):
        arms = [("swarm", c["swarm"]), ("central", c["centralized"])] + [
            (f"site-{i + 1}", v) for i, v in enumerate(c["local_only"])
        ]
        colors = ["tab:green", "tab:blue"] + ["tab:gray"] * len(c["local_only"])
        ax.bar([a for a, _ in arms], [v[0] for _, v in arms], yerr=[v[1] for _, v in arms], color=colors)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{c['task']} alpha={c['alpha']} ({len(c['seeds'])} seeds)", fontsize=9)
        ax.set_ylabel(f"final {c['metric']}")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    bars = out / "learning_final.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for c in cases:
        xs = list(range(1, len(c["curve_mean"]) + 1))
        line = ax.plot(xs, c["curve_mean"], marker="o", label=f"swarm {c['task']} alpha={c['alpha']}")[0]
        lo = [m - s for m, s in zip(c["curve_mean"], c["curve_sd"], strict=True)]
        hi = [m + s for m, s in zip(c["curve_mean"], c["curve_sd"], strict=True)]
        ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
        ax.axhline(c["centralized"][0], color=line.get_color(), linestyle="dotted", linewidth=1)
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("metric on the shared held-out set")
    ax.set_title("swarm model per round (dotted: centralized)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    curve = out / "learning_rounds.png"
    fig.savefig(curve, dpi=110)
    plt.close(fig)
    return [bars, curve]


@bench_app.command("learning")
def learning_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    seeds: int = typer.Option(3, "--seeds", help="Seeds per case (full run)."),
    rounds: int = typer.Option(5, "--rounds"),
    local_steps: int = typer.Option(10, "--local-steps"),
    sites: int = typer.Option(3, "--sites"),
    task: str = typer.Option("", "--task", help="Only this task kind (classification|segmentation)."),
) -> None:
    """Swarm vs centralized vs local-only on generated non-IID sites (Dirichlet alpha 0.1 and 1.0)."""
    with cli_errors():
        run_learning(out, quick, seeds=seeds, rounds=rounds, local_steps=local_steps, sites=sites, task=task)


def run_learning(
    out: Path,
    quick: bool,
    *,
    seeds: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    sites: int = 3,
    task: str = "",
) -> dict[str, Any]:
    from swarmd.bench.learning import run_learning_bench

    t0 = time.perf_counter()
    cases = [("classification", 0.1)] if quick else [c for c in LEARNING_CASES if not task or c[0] == task]
    seed_list = [0] if quick else list(range(seeds))
    steps = [
        (
            f"{kind} alpha={alpha} seed {seed}",
            partial(
                run_learning_bench,
                kind,
                sites=sites,
                rounds=rounds,
                local_steps=local_steps,
                alpha=alpha,
                seed=seed,
                quick=quick,
                threads=0,
            ),
        )
        for kind, alpha in cases
        for seed in seed_list
    ]
    runs = _steps("learning", steps)
    out.mkdir(parents=True, exist_ok=True)
    # The raw runs first: they are the expensive part, and the summary can be redone from them.
    (out / "learning_runs.json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
    summaries = [summarize_case([r for r in runs if (r["task"], r["alpha"]) == case]) for case in cases]
    notes = [
        "Every arm gets the same optimiser steps per site (rounds x local steps) and is scored on one shared "
        "held-out test set. The swarm arm runs the task's merge rule in one process (no chain, no network): "
        "what it measures is the learning, not the protocol. The most skewed site is, per seed, the one "
        "whose class mix is furthest (total variation) from the pooled data; 'clearly better' means "
        f">= {CLEAR_GAIN}.",
        "Reference: Warnat-Herresthal et al., Nature 2021 (swarm learning matched pooled training, e.g. AUC "
        "0.998 vs 0.995 on COVID-19 blood transcriptomes, and beat every single site).",
    ]
    if quick:
        notes.insert(
            0,
            "**Quick mode**: a handful of optimiser steps per arm, far from convergence; the goals are "
            "computed so the output has its full shape, but they say nothing about learning quality.",
        )
    return _write(
        out,
        "learning",
        quick=quick,
        result={"cases": summaries, "runs": runs},
        goals=learning_goals(summaries),
        tables=learning_tables(summaries),
        plots=learning_plots(summaries, out),
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


# --- round ------------------------------------------------------------------------------------------
@bench_app.command("round")
def round_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    sizes: str = typer.Option("3,5,8", "--sizes", help="Comma-separated site counts."),
    rounds: int = typer.Option(4, "--rounds", help="Rounds per size (the first is a warm-up)."),
    block_time: float | None = typer.Option(
        None, "--block-time", help="anvil block time (default: instant)."
    ),
    models: str = typer.Option(
        "densenet121", "--models", help="Comma-separated: densenet121 (~7M), densenet264 (~30.6M)."
    ),
) -> None:
    """Round time and overhead of real daemons on a local anvil, and the leader's memory."""
    with cli_errors():
        run_round(
            out,
            quick,
            sizes=_ints(sizes),
            rounds=rounds,
            block_time=block_time,
            models=tuple(m.strip() for m in models.split(",") if m.strip()),
        )


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def run_round(
    out: Path,
    quick: bool,
    *,
    sizes: tuple[int, ...] = (3, 5, 8),
    rounds: int = 4,
    block_time: float | None = None,
    models: tuple[str, ...] = ("densenet121",),
) -> dict[str, Any]:
    from swarmd.bench.round import MODELS, format_tables, round_goals, round_plot, run_round_bench

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    name = "round" + ("" if block_time is None else f"_block{block_time:g}")
    name += "" if models == ("densenet121",) else "_" + "_".join(models)
    t0 = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("round", total=None)
        result = run_round_bench(
            sizes,
            quick=quick,
            rounds=rounds,
            block_time=block_time,
            models=models,
            on_step=lambda msg: progress.update(task, description=f"round: {msg}"),
            keep_logs=out / f"{name}-logs",
        )
        progress.update(task, description="round: done", total=1, completed=1)
    return _write(
        out,
        name,
        quick=quick,
        result=result,
        goals=round_goals(result),
        tables=format_tables(result),
        plots=[round_plot(result, out / f"{name}_breakdown.png")],
        seconds=time.perf_counter() - t0,
        notes=result.get("notes", []),
    )


# --- all --------------------------------------------------------------------------------------------
@bench_app.command("all")
def all_cmd(quick: bool = QUICK, out: Path = OUT) -> None:
    """Every bench in sequence: chain, transport, train, round, learning."""
    with cli_errors():
        docs = [
            run_chain(out, quick),
            run_transport(out, quick),
            run_train(out, quick),
            run_round(out, quick),
            run_learning(out, quick),
        ]
        missed = [f"{d['bench']}: {g['goal']}" for d in docs for g in d["goals"] if not g["met"]]
        total = sum(d["seconds"] for d in docs)
        console.print(f"[bold]all benches done[/] in {total:.0f} s; {len(missed)} goal(s) missed")
        for line in missed:
            console.print(f"  [yellow]missed[/] {line}")
