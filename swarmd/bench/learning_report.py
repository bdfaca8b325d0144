"""The hard task's report: seeds summarised (mean ± sd), the issue-16 goals judged, tables and plots.

Every goal is computed from the runs (never typed in): per alpha, pooled - best single site (the task's
own check: ≥ 0.05 and larger than its spread), the best swarm method against the best single site
(≥ +0.03) and against compute-matched pooled training (within 0.02), FedBN and merged statistics on
the BatchNorm network against fedavg on the GroupNorm one (within 0.02); per attack, the best robust
rule against clean fedavg (within 0.02), with plain fedavg's drop in the note. "Best" is the highest
mean over the seeds; differences are taken per seed, then summarised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from swarmd.bench.report import Goal, Report, goal, mean_sd, pyplot, save_figure, table

METRIC = "auc"
TASK_GAP, SWARM_GAIN, NEAR = 0.05, 0.03, 0.02
MeanSd = tuple[float, float]


def _m(arm: dict[str, Any]) -> float:
    return float(arm["metrics"].get(METRIC, float("nan")))


NAN: MeanSd = (math.nan, math.nan)  # a figure the runs did not measure


def _pm(ms: MeanSd) -> str:
    return "-" if math.isnan(ms[0]) else f"{ms[0]:.3f} ± {ms[1]:.3f}"


def summarize_alpha(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds of one alpha: every arm's final AUC, the best single site and the goal differences."""
    sites = len(runs[0]["local_only"])
    per_arm: dict[str, list[float]] = {f"site-{i + 1} alone": [] for i in range(sites)}
    per_arm |= {"best single site": [], "pooled (step-matched)": [], "pooled (compute-matched)": []}
    for r in runs:
        alone = [_m(s) for s in r["local_only"]]
        for i, v in enumerate(alone):
            per_arm[f"site-{i + 1} alone"].append(v)
        per_arm["best single site"].append(max(alone))
        per_arm["pooled (step-matched)"].append(_m(r["pooled_step"]))
        per_arm["pooled (compute-matched)"].append(_m(r["pooled_compute"]))
    swarm = {a: [_m(r["arms"][a]) for r in runs] for a in runs[0]["arms"]}
    best = max(swarm, key=lambda a: mean_sd(swarm[a])[0]) if swarm else ""
    out: dict[str, Any] = {
        "alpha": runs[0]["alpha"],
        "seeds": [r["seed"] for r in runs],
        "arms": {a: mean_sd(v) for a, v in (per_arm | swarm).items()},
        "best_swarm": best,
        "schedule": _schedule(runs[0]),
        "curves": {a: _curve([r["arms"][a]["curve"] for r in runs]) for a in swarm},
    }
    single, pooled = per_arm["best single site"], per_arm["pooled (compute-matched)"]
    out["pooled_minus_single"] = _diff(pooled, single)
    if best:
        out["best_minus_single"] = _diff(swarm[best], single)
        out["pooled_minus_best"] = _diff(pooled, swarm[best])
    for bn in ("fedbn", "bnstats"):  # the BatchNorm bundle's two remedies against GroupNorm under fedavg
        if "fedavg" in swarm and bn in swarm:
            out[f"fedavg_minus_{bn}"] = _diff(swarm["fedavg"], swarm[bn])
    return out


def _schedule(run: dict[str, Any]) -> str:
    """How the swarm arms spent their steps, "8 rounds x 8 steps": the goals depend on it, so they say it."""
    if "rounds" not in run:
        return ""
    return f"{run['rounds']} rounds x {run['local_steps']} steps"


def _diff(a: list[float], b: list[float]) -> MeanSd:
    return mean_sd([x - y for x, y in zip(a, b, strict=True)])


def _curve(curves: list[list[dict[str, Any]]]) -> list[float]:
    return [mean_sd(pt.get(METRIC) for pt in col)[0] for col in zip(*curves, strict=True)]


def summarize_poison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The poisoning seeds: each attack's final AUC per rule, the best robust rule and fedavg's drop."""
    clean = [_m(r["clean"]) for r in runs]
    # fedavg over the honest sites only (results from before it was run have none)
    honest = [_m(r["honest"]) for r in runs] if all("honest" in r for r in runs) else []
    attacks: dict[str, Any] = {}
    for attack in runs[0]["poisoned"]:
        rules = {
            rule: [_m(r["poisoned"][attack][rule]) for r in runs] for rule in runs[0]["poisoned"][attack]
        }
        robust = [k for k in rules if k != "fedavg"]
        best = max(robust, key=lambda k: mean_sd(rules[k])[0]) if robust else ""
        attacks[attack] = {
            "rules": {k: mean_sd(v) for k, v in rules.items()},
            "best_robust": best,
            "clean_minus_best": _diff(clean, rules[best]) if best else (float("nan"), float("nan")),
            "fedavg_drop": _diff(clean, rules["fedavg"])
            if "fedavg" in rules
            else (float("nan"), float("nan")),
            "honest_minus_best": _diff(honest, rules[best]) if best and honest else NAN,
        }
    return {
        "alpha": runs[0]["alpha"],
        "seeds": [r["seed"] for r in runs],
        "site": runs[0]["poisoned_site"],
        "clean_fedavg": mean_sd(clean),
        "honest_fedavg": mean_sd(honest) if honest else NAN,
        "attacks": attacks,
    }


def hard_goals(alphas: list[dict[str, Any]], poison: dict[str, Any] | None) -> list[Goal]:
    goals = []
    for c in alphas:
        label = f"hard alpha={c['alpha']}" + (f" ({c['schedule']})" if c.get("schedule") else "")
        gap, spread = c["pooled_minus_single"]
        note = f"sd over seeds {spread:.3f}; the task is hard enough when the gap is >= {TASK_GAP} and > sd"
        goals.append(
            goal(
                f"{label}: pooled (compute-matched) - best single site",
                gap,
                TASK_GAP,
                gap >= TASK_GAP and spread < gap,
                note,
            )
        )
        if c["best_swarm"]:
            gain = c["best_minus_single"][0]
            goals.append(
                goal(
                    f"{label}: best swarm method ({c['best_swarm']}) - best single site",
                    gain,
                    SWARM_GAIN,
                    gain >= SWARM_GAIN,
                )
            )
            lag = c["pooled_minus_best"][0]
            goals.append(
                goal(
                    f"{label}: pooled (compute-matched) - best swarm method ({c['best_swarm']})",
                    lag,
                    NEAR,
                    lag <= NEAR,
                )
            )
        for bn, name in (("fedbn", "FedBN (BatchNorm)"), ("bnstats", "BatchNorm, merged statistics")):
            if f"fedavg_minus_{bn}" in c:
                d = c[f"fedavg_minus_{bn}"][0]
                goals.append(goal(f"{label}: fedavg (GroupNorm) - {name}", d, NEAR, d <= NEAR))
    for attack, a in (poison or {}).get("attacks", {}).items():
        if not a["best_robust"]:
            continue
        lag = a["clean_minus_best"][0]
        note = f"plain fedavg's drop: {_pm(a['fedavg_drop'])}"
        if not math.isnan(a["honest_minus_best"][0]):
            note += f"; fedavg without the attacker: {_pm(a['honest_minus_best'])} above the best rule"
        goals.append(
            goal(
                f"poisoned ({attack}): clean fedavg - best robust rule ({a['best_robust']})",
                lag,
                NEAR,
                lag <= NEAR,
                note,
            )
        )
    return goals


def hard_tables(alphas: list[dict[str, Any]], poison: dict[str, Any] | None) -> str:
    parts = []
    if alphas:
        names = list(alphas[0]["arms"])
        head = ("arm", *(f"alpha={c['alpha']} ({len(c['seeds'])} seeds)" for c in alphas))
        parts.append(
            table(head, [(n, *(_pm(c["arms"][n]) if n in c["arms"] else "" for c in alphas)) for n in names])
        )
    if poison:
        rules = list(next(iter(poison["attacks"].values()))["rules"]) if poison["attacks"] else []
        without = f"fedavg without {poison['site']}"
        head = ("attack", *rules, "clean fedavg", without, "fedavg drop")
        rows = [
            (
                k,
                *(_pm(a["rules"][r]) for r in rules),
                _pm(poison["clean_fedavg"]),
                _pm(poison["honest_fedavg"]),
                _pm(a["fedavg_drop"]),
            )
            for k, a in poison["attacks"].items()
        ]
        parts.append(
            f"Poisoned: {poison['site']} of the sites, alpha={poison['alpha']}, final {METRIC}:\n\n"
            + table(head, rows)
        )
    return "\n\n".join(parts)


def hard_plots(alphas: list[dict[str, Any]], poison: dict[str, Any] | None, out: Path) -> list[Path]:
    plots = []
    if alphas:
        plots += [_bars(alphas, out / "learning_hard.png"), _rounds(alphas, out / "learning_hard_rounds.png")]
    if poison and poison["attacks"]:
        plots.append(_poison_bars(poison, out / "learning_poison.png"))
    return plots


def _bars(alphas: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(alphas), figsize=(6.5 * len(alphas), 4.2), squeeze=False)
    for ax, c in zip(axes[0], alphas, strict=True):
        names = [n for n in c["arms"] if not n.endswith(" alone")]
        vals = [c["arms"][n] for n in names]
        colors = ["tab:gray"] + ["tab:blue"] * 2 + ["tab:green"] * (len(names) - 3)
        ax.bar(names, [v[0] for v in vals], yerr=[v[1] for v in vals], color=colors)
        ax.set_ylim(0.4, 1.0)
        ax.set_title(f"hard task, alpha={c['alpha']} ({len(c['seeds'])} seeds)", fontsize=9)
        ax.set_ylabel(f"final {METRIC} on the shared test set")
        ax.tick_params(axis="x", labelsize=7, labelrotation=60)
    return save_figure(fig, path)


def _rounds(alphas: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(alphas), figsize=(6 * len(alphas), 3.8), squeeze=False)
    for ax, c in zip(axes[0], alphas, strict=True):
        for arm, curve in c["curves"].items():
            ax.plot(range(1, len(curve) + 1), curve, marker=".", label=arm)
        ax.axhline(c["arms"]["pooled (compute-matched)"][0], color="black", linestyle="dotted", linewidth=1)
        ax.set_title(
            f"alpha={c['alpha']}: swarm arms per round (dotted: pooled, compute-matched)", fontsize=8
        )
        ax.set_xlabel("round")
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def _poison_bars(poison: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    attacks = list(poison["attacks"])
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.6), squeeze=False)
    for ax, attack in zip(axes[0], attacks, strict=True):
        rules = poison["attacks"][attack]["rules"]
        ax.bar(
            list(rules), [v[0] for v in rules.values()], yerr=[v[1] for v in rules.values()], color="tab:red"
        )
        ax.axhline(poison["clean_fedavg"][0], color="tab:green", linestyle="dotted", label="clean fedavg")
        ax.set_ylim(0.3, 1.0)
        ax.set_title(f"{attack} from {poison['site']}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, labelrotation=45)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


HARD_NOTES = [
    "Hard task (`train.demohard`): 5 sites of 40 generated 32x32 chest-like images (a fifth held out for "
    "validation), each site holding one of two findings (a small bright nodule or a dark bulla), a "
    "per-site scanner (gain, offset, contrast curve, noise), Dirichlet(alpha) label skew; a shared held-out "
    "test set of 200 images with both findings and every site's scanner. Network: `cxr_small` (MONAI "
    "Classifier, GroupNorm; FedBN runs `cxr_small_bn`, its BatchNorm copy, with BatchNorm kept local and "
    "scored as the mean over the sites of each site's model; `bnstats` runs it with merged BatchNorm "
    "statistics, one global model). Every arm starts from the same model and, "
    "per seed, the same batch order.",
    "Steps: each site alone and pooled (step-matched) train rounds x local steps; pooled (compute-"
    "matched) and every swarm arm N x that (N = 5 sites). FedProx mu = 0.01; trimmed mean cuts 1 of 5 at "
    "each end (trim_ratio 0.2); Krum f = 1, m = 1; multi-Krum f = 1, m = 4 (the mean of the 4 best-scored "
    "updates). Cyclic: each round the model visits every site once in a seeded random order. Poisoning: "
    "the last site sends `w - d` (sign_flip), `w + 10 d` (scaled) or `w + N(0, 1)` (random) every round, "
    "`d` its honest update; 'fedavg without site-5' is fedavg over the four honest sites.",
]


def hard_report(runs: list[dict[str, Any]], out: Path, notes: list[str]) -> Report:
    """The `Report` of a `--task hard` run (`runs`: `run_hard` and `run_poison` results)."""
    methods = [r for r in runs if r.get("kind") == "methods"]
    poisoned = [r for r in runs if r.get("kind") == "poison"]
    alphas = [
        summarize_alpha([r for r in methods if r["alpha"] == a])
        for a in dict.fromkeys(r["alpha"] for r in methods)
    ]
    poison = summarize_poison(poisoned) if poisoned else None
    return Report(
        "learning",
        {"hard": alphas, "poison": poison, "runs": runs},
        hard_goals(alphas, poison),
        hard_tables(alphas, poison),
        hard_plots(alphas, poison, out),
        notes + HARD_NOTES,
    )
