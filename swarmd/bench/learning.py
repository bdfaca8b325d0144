"""`swarm bench learning`: final test metric of swarm vs centralized vs each site alone, non-IID.

One process plays every site: the same BundleTrainer each daemon runs, one per site, and the
task's merge rule from `swarmd.merge` between rounds, with no chain and no network (`learning_arms`).
All three arms get the same step budget per site (rounds x local_steps) and are scored on the same
shared held-out test set, so the numbers answer one question: does joining the swarm pay off for a
site whose own data is skewed? `learning_report` here summarises the seeds of each case (mean ± sd),
judges the goals and renders the tables and plots. These are the quick tasks (classification,
segmentation); `--task hard` is `learning_hard` (the methods of issue 16 on a task where pooling
clearly pays off), reported by the module `learning_report`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from swarmd.bench.learning_arms import swarm_arm
from swarmd.bench.report import Goal, Report, Step, goal, mean_sd, pyplot, save_figure, table
from swarmd.errors import UsageError
from swarmd.task import PrivacySettings, Task, WeightKind, load_task
from swarmd.train import example_task_file, generate_demo_data
from swarmd.train.baseline import centralized, local_only

BUNDLE_FOR = {"classification": "cxr_densenet", "segmentation": "tumor_unet"}
CASES = [(kind, alpha) for kind in ("classification", "segmentation") for alpha in (0.1, 1.0)]
CLEAR_GAIN = 0.05  # "clearly better" at the most skewed site: at least this much above its local-only model
NOTES = [
    "Every arm gets the same optimiser steps per site (rounds x local steps) and is scored on one shared "
    "held-out test set. The swarm arm runs the task's merge rule in one process (no chain, no network): "
    "what it measures is the learning, not the protocol. The most skewed site is, per seed, the one "
    "whose class mix is furthest (total variation) from the pooled data; 'clearly better' means "
    f">= {CLEAR_GAIN}.",
    "Reference: Warnat-Herresthal et al., Nature 2021 (swarm learning matched pooled training, e.g. AUC "
    "0.998 vs 0.995 on COVID-19 blood transcriptomes, and beat every single site).",
]
QUICK_NOTE = (
    "**Quick mode**: a handful of optimiser steps per arm, far from convergence; the goals are "
    "computed so the output has its full shape, but they say nothing about learning quality."
)


def bench_task(task_kind: str, rounds: int, local_steps: int, privacy: PrivacySettings | None = None) -> Task:
    """The example task of `task_kind` for the bench: its rounds and steps, weights sent, `privacy`."""
    base = load_task(example_task_file(BUNDLE_FOR[task_kind]))
    swarm = replace(base.swarm, rounds=rounds, local_steps=local_steps, send=WeightKind.WEIGHTS)
    return replace(base, swarm=swarm, privacy=privacy or base.privacy)


def run_swarm_arm(
    task_kind: str,
    privacy: PrivacySettings,
    *,
    sites: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    alpha: float = 1.0,
    seed: int = 0,
    threads: int = 0,
) -> dict[str, Any]:
    """Only the swarm arm, with `privacy` as the task's `[privacy]` table (`swarm bench privacy`'s unit).

    torch's global generator (which shuffles the bundle's loaders) is seeded from `seed` for the arm, so
    two arms of one seed train on the same batches from the same start: what differs is the privacy."""
    task = bench_task(task_kind, rounds, local_steps, privacy)
    with (
        tempfile.TemporaryDirectory(prefix="swarmd-bench-private-") as tmp,
        torch.random.fork_rng(devices=[]),
    ):
        torch.manual_seed(seed)
        root = Path(tmp)
        demo = generate_demo_data(root / "data", sites=sites, task=task_kind, alpha=alpha, seed=seed)
        arm = swarm_arm(
            task, demo.site_datalists, demo.test_datalist, workdir=root / "swarm", threads=threads
        )
    extra: dict[str, Any] = {k: arm[k] for k in ("plans", "unmask_error") if k in arm}
    return {
        "task": task_kind,
        "bundle": BUNDLE_FOR[task_kind],
        "sites": sites,
        "alpha": alpha,
        "seed": seed,
        "rounds": rounds,
        "local_steps": local_steps,
        "privacy": asdict(privacy),
        "metrics": arm["metrics"],
        "curve": arm["curve"],
        "seconds": arm["seconds"],
        **extra,
    }


def run_learning_bench(
    task_kind: str = "classification",
    *,
    sites: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    alpha: float = 0.3,
    seed: int = 0,
    quick: bool = False,
    threads: int = 0,
) -> dict[str, Any]:
    """Swarm, centralized and local-only training of the example bundle for `task_kind`."""
    if quick:
        rounds, local_steps = min(rounds, 2), min(local_steps, 3)
    task = bench_task(task_kind, rounds, local_steps)
    steps = rounds * local_steps
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-learning-") as tmp:
        root = Path(tmp)
        demo = generate_demo_data(root / "data", sites=sites, task=task_kind, alpha=alpha, seed=seed)
        dls, test = demo.site_datalists, demo.test_datalist
        swarm = swarm_arm(task, dls, test, workdir=root / "swarm", threads=threads)
        central = centralized(task, dls, test, steps=steps, workdir=root / "central", threads=threads)
        alone = local_only(task, dls, test, steps=steps, workdir=root / "local", threads=threads)
    return {
        "bench": "learning",
        "task": task_kind,
        "bundle": BUNDLE_FOR[task_kind],
        "sites": sites,
        "alpha": alpha,
        "seed": seed,
        "rounds": rounds,
        "local_steps": local_steps,
        "merge": task.swarm.merge,
        "site_labels": [list(s.class_counts) for s in demo.sites],
        "swarm": {k: swarm[k] for k in ("metrics", "curve", "seconds")},
        "centralized": {"metrics": central.metrics, "seconds": central.seconds},
        "local_only": [{"site": r.name, "metrics": r.metrics, "seconds": r.seconds} for r in alone],
        "sites_detail": [
            {k: v for k, v in asdict(s).items() if k not in ("datalist", "scanner")} for s in demo.sites
        ],
    }


def learning_steps(
    quick: bool = False,
    *,
    seeds: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    sites: int = 3,
    task: str = "",
    hard: dict[str, Any] | None = None,
) -> list[Step]:
    """One run per (task, alpha) case and seed; `quick`: one case, one seed. `task`: only that kind;
    "hard": `learning_hard.hard_steps` with the options in `hard` (arms, alphas, poison)."""
    if task and task not in (*BUNDLE_FOR, "hard"):
        raise UsageError(f"--task must be one of {', '.join(BUNDLE_FOR)}, hard; got {task!r}")
    for flag, value in (("seeds", seeds), ("rounds", rounds), ("local-steps", local_steps), ("sites", sites)):
        if value < 1:
            raise UsageError(f"--{flag} must be at least 1, got {value}")
    if task == "hard":
        from swarmd.bench.learning_hard import hard_steps

        return hard_steps(quick, seeds=seeds, rounds=rounds, local_steps=local_steps, **(hard or {}))
    cases = [c for c in CASES if not task or c[0] == task]
    if quick:
        cases = cases[:1]
    seed_list = [0] if quick else list(range(seeds))
    return [
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


def learning_report(runs: list[dict[str, Any]], out: Path, quick: bool) -> Report:
    """Writes the raw runs to `out`/learning_runs.json, then summarises, judges and renders them."""
    out.mkdir(parents=True, exist_ok=True)
    # The raw runs first: they are the expensive part, and the summary can be redone from them.
    (out / "learning_runs.json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
    if any(r.get("task") == "hard" for r in runs):
        from swarmd.bench.learning_report import hard_report

        return hard_report(runs, out, [QUICK_NOTE] if quick else [])
    cases = dict.fromkeys((r["task"], r["alpha"]) for r in runs)
    summaries = [summarize_case([r for r in runs if (r["task"], r["alpha"]) == case]) for case in cases]
    return Report(
        "learning",
        {"cases": summaries, "runs": runs},
        learning_goals(summaries),
        learning_tables(summaries),
        learning_plots(summaries, out),
        ([QUICK_NOTE] if quick else []) + NOTES,
    )


# --- summary and goals ------------------------------------------------------------------------------
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
        "swarm": mean_sd(swarm),
        "centralized": mean_sd(central),
        "local_only": [mean_sd(v) for v in local],
        "best_local": mean_sd(best_local),
        "swarm_minus_central": mean_sd([s - c for s, c in zip(swarm, central, strict=True)]),
        "swarm_minus_best_local": mean_sd([s - b for s, b in zip(swarm, best_local, strict=True)]),
        "skewed_site_tv": mean_sd(skew_tv),
        "skewed_site_gain": mean_sd(skew_gain),
        "curve_mean": [mean_sd(col)[0] for col in zip(*curves, strict=True)],
        "curve_sd": [mean_sd(col)[1] for col in zip(*curves, strict=True)],
        "raw": {"swarm": swarm, "centralized": central, "local_only": local},
    }


def learning_goals(cases: list[dict[str, Any]]) -> list[Goal]:
    goals = []
    for c in cases:
        label = f"{c['task']} alpha={c['alpha']}"
        gap = c["swarm_minus_central"][0]
        goals.append(goal(f"{label}: centralized - swarm ({c['metric']})", -gap, 0.02, -gap <= 0.02))
        vs_best = c["swarm_minus_best_local"][0]
        goals.append(goal(f"{label}: swarm - best local-only site", vs_best, 0.0, vs_best >= 0.0))
        gain = c["skewed_site_gain"][0]
        goals.append(
            goal(f"{label}: swarm - local-only at the most skewed site", gain, CLEAR_GAIN, gain >= CLEAR_GAIN)
        )
    return goals


# --- rendering --------------------------------------------------------------------------------------
def _pm(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def learning_tables(cases: list[dict[str, Any]]) -> str:
    sites = max(len(c["local_only"]) for c in cases)
    arms = ("task", "alpha", "metric", "seeds", "swarm", "centralized")
    alone = (f"site-{i + 1} alone" for i in range(sites))
    head = (*arms, *alone, "swarm - best site", "most skewed site: TV, swarm gain")
    rows = [
        (
            c["task"],
            c["alpha"],
            c["metric"],
            len(c["seeds"]),
            _pm(c["swarm"]),
            _pm(c["centralized"]),
            *(_pm(v) for v in c["local_only"]),
            _pm(c["swarm_minus_best_local"]),
            f"{c['skewed_site_tv'][0]:.2f}, {_pm(c['skewed_site_gain'])}",
        )
        for c in cases
    ]
    return table(head, rows)


def learning_plots(cases: list[dict[str, Any]], out: Path) -> list[Path]:
    """Final metric per arm (bars, one panel per case) and the swarm model per round."""
    return [_final_bars(cases, out / "learning_final.png"), _round_curves(cases, out / "learning_rounds.png")]


def _final_bars(cases: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
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
    return save_figure(fig, path)


def _round_curves(cases: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
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
    return save_figure(fig, path)
