"""`swarm bench privacy`: what privacy costs in learning (DP-SGD, secure aggregation) and in training time.

Learning: the learning bench's swarm arm (`learning.run_swarm_arm`: every site's BundleTrainer and the
merge in one process, see `private_swarm` for which of the daemon's privacy steps run and which do not)
for each task kind and seed, once per arm: non-private, secure aggregation without DP, and DP-SGD
(`mechanism = "sample"`, sigma derived for the planned rounds from `target_epsilon`, budget = epsilon,
delta 1e-5) at each epsilon. Arms of one seed share the data, the initial model and the loaders' shuffling,
so the secure-aggregation arm differs from the plain one only by its fixed point (issue 12's goal: within
0.005). Time: `dp_sgd.run_dp_sgd_bench` (DP-SGD vs plain CPU time per step, issue 13's goal <= 2.5x).
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

from swarmd.bench.dp_sgd import dp_sgd_report, dp_sgd_table, run_dp_sgd_bench
from swarmd.bench.learning import BUNDLE_FOR, QUICK_NOTE, run_swarm_arm
from swarmd.bench.learning import _metric_key as metric_key
from swarmd.bench.report import Goal, Report, Step, goal, mean_sd, pyplot, save_figure, table
from swarmd.errors import UsageError
from swarmd.task import DPMechanism, PrivacySettings

EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-5
SECAGG_TOLERANCE = 0.005
PLAIN, SECAGG = "non-private", "secure aggregation"
NOTES = [
    "Each arm is the learning bench's swarm arm: every site's BundleTrainer and the merge in one process "
    "(3 sites, generated non-IID data, one shared held-out test set). The privacy in it is the daemon's "
    "own code: DP arms get `daemon.site.site_budget` per site (sigma derived by Opacus's RDP accountant "
    "for the planned rounds, DP-SGD switched on in the BundleTrainer by `make_private`: per-sample "
    "clipping to C = 1, Poisson sampling at batch/n, Gaussian noise), the budget check before each round "
    "and the epsilon counted after it; the secure-aggregation arm runs `swarmd.privacy`'s SecAgg+ round "
    "in memory (fresh X25519 keys, encrypted Shamir shares into each site's ShareVault, `mask_update`, "
    "the leader's Unmasker summing uint32 tensors, asking the vaults and unmasking). Not exercised: the "
    "transport, the chain (keys are not signed or advertised on chain), dropouts and failover.",
    "Arms of one seed share data, initial model and batch order (torch's generator is seeded per arm); "
    "DP noise and Poisson sampling draw from the OS, as in the daemon, so DP arms are not reproducible. "
    "Epsilon is per site (one patient's images added to or removed from one site's data), at delta 1e-5.",
    "Reference (issue 13): Ziegler et al., Sensors 2022 (DP-FL on CheXpert + Mendeley chest X-rays, 36 "
    "clients, DenseNet121): AUC 0.94 at epsilon 6, as non-private; Tayebi Arasteh et al., Radiology: AI "
    "2024 (DP on > 590,000 chest radiographs from 5 institutions): at epsilon about 1 no evidence of an "
    "added AUC loss across institutions. Those sites hold thousands to hundreds of thousands of images; "
    "these hold ~60, and DP-SGD's noise per step (sigma * C / batch per coordinate, over every weight) "
    "grows as a site's data shrinks, since sigma must then cover a higher sampling rate batch/n.",
]


def arm_names(epsilons: tuple[float, ...]) -> list[str]:
    return [PLAIN, SECAGG, *(f"epsilon {e:g}" for e in epsilons)]


def arm_privacy(arm: str) -> PrivacySettings:
    """The `[privacy]` table of one arm."""
    if arm == PLAIN:
        return PrivacySettings()
    if arm == SECAGG:
        return PrivacySettings(secure_aggregation=True)
    eps = float(arm.removeprefix("epsilon "))
    return PrivacySettings(mechanism=DPMechanism.SAMPLE, target_epsilon=eps, delta=DELTA, epsilon_budget=eps)


def privacy_steps(
    quick: bool = False,
    *,
    seeds: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    sites: int = 3,
    alpha: float = 1.0,
    task: str = "",
    epsilons: tuple[float, ...] = EPSILONS,
    timing: bool = True,
    log: Path | None = None,
) -> list[Step]:
    """One step per (task, seed, arm), then the DP-SGD timing. `quick`: classification, one seed, 2 x 3.
    `log`: each arm's run is appended to this JSON-lines file as it ends (a long run's insurance)."""
    if task and task not in BUNDLE_FOR:
        raise UsageError(f"--task must be one of {', '.join(BUNDLE_FOR)}, got {task!r}")
    for flag, value in (("seeds", seeds), ("rounds", rounds), ("local-steps", local_steps), ("sites", sites)):
        if value < 1:
            raise UsageError(f"--{flag} must be at least 1, got {value}")
    if not epsilons or any(not (math.isfinite(e) and e > 0) for e in epsilons):
        raise UsageError(f"--epsilons must be numbers > 0, got {epsilons}")
    kinds = [task] if task else list(BUNDLE_FOR)
    if quick:
        kinds, seeds, rounds, local_steps, epsilons = (
            kinds[:1],
            1,
            min(rounds, 2),
            min(local_steps, 3),
            (1.0, 8.0),
        )
    steps: list[Step] = [
        (
            f"{kind} seed {seed}: {arm}",
            partial(
                _arm,
                arm,
                kind,
                sites=sites,
                rounds=rounds,
                local_steps=local_steps,
                alpha=alpha,
                seed=seed,
                log=log,
            ),
        )
        for kind in kinds
        for seed in range(seeds)
        for arm in arm_names(tuple(epsilons))
    ]
    if timing:
        steps.append(("DP-SGD time per step", partial(run_dp_sgd_bench, quick)))
    return steps


def _arm(arm: str, kind: str, *, log: Path | None = None, **kw: Any) -> dict[str, Any]:
    run = {"arm": arm, **run_swarm_arm(kind, arm_privacy(arm), **kw)}
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(json.dumps(run, default=str) + "\n")
    return run


def privacy_report(results: list[dict[str, Any]], out: Path, quick: bool) -> Report:
    """Writes the raw runs to `out`/privacy_runs.json, then summarises, judges and renders them."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [r for r in results if "arm" in r]
    timing = next((r for r in results if r.get("bench") == "dp_sgd"), None)
    (out / "privacy_runs.json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
    cases = [
        summarize_task([r for r in runs if r["task"] == kind])
        for kind in dict.fromkeys(r["task"] for r in runs)
    ]
    goals = privacy_goals(cases) + (dp_sgd_report(timing).goals if timing else [])
    tables = privacy_tables(cases)
    if timing:
        tables += "\n\nDP-SGD vs plain local training, CPU time per step (one thread):\n\n" + dp_sgd_table(
            timing
        )
    plots = [plot_metric_vs_epsilon(cases, out / "privacy_epsilon.png")] if cases else []
    result = {"cases": cases, "dp_sgd": timing, "runs": runs}
    return Report("privacy", result, goals, tables, plots, ([QUICK_NOTE] if quick else []) + NOTES)


# --- summary and goals ------------------------------------------------------------------------------
def _final_epsilon(run: dict[str, Any]) -> float:
    """The largest epsilon any site had spent after the last round (0 without DP)."""
    point = run["curve"][-1].get("privacy") or {}
    return max((point.get("epsilon") or {"": 0.0}).values())


def _short_rounds(run: dict[str, Any]) -> int:
    """Rounds in which a site sat out because its budget was spent."""
    return sum(
        1 for c in run["curve"] if (c.get("privacy") or {}).get("committed", run["sites"]) < run["sites"]
    )


def summarize_task(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one task kind -> per arm: metric per seed, mean ± sd, epsilon spent, sigma."""
    key = metric_key(runs[0]["metrics"])
    arms: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["arm"] for r in runs):
        mine = sorted((r for r in runs if r["arm"] == name), key=lambda r: r["seed"])
        plans = [p for r in mine for p in r.get("plans") or [] if p]
        arms[name] = {
            "target_epsilon": float(mine[0]["privacy"].get("target_epsilon") or 0.0),
            "seeds": [r["seed"] for r in mine],
            "values": [r["metrics"][key] for r in mine],
            "metric": mean_sd(r["metrics"][key] for r in mine),
            "epsilon": max((_final_epsilon(r) for r in mine), default=0.0),
            "sigma": max((p["noise_multiplier"] for p in plans), default=0.0),
            "sample_rate": max((p["sample_rate"] for p in plans), default=0.0),
            "short_rounds": sum(_short_rounds(r) for r in mine),
            "unmask_error": max((e for r in mine for e in r.get("unmask_error") or []), default=None),
            "seconds": mean_sd(r["seconds"] for r in mine),
        }
    plain = dict(
        zip(arms.get(PLAIN, {}).get("seeds", []), arms.get(PLAIN, {}).get("values", []), strict=True)
    )
    for arm in arms.values():
        arm["minus_plain"] = mean_sd(
            v - plain[s] for s, v in zip(arm["seeds"], arm["values"], strict=True) if s in plain
        )
    secagg = arms.get(SECAGG, {})
    diffs = [
        abs(v - plain[s])
        for s, v in zip(secagg.get("seeds", []), secagg.get("values", []), strict=True)
        if s in plain
    ]
    return {
        "task": runs[0]["task"],
        "alpha": runs[0]["alpha"],
        "metric": key,
        "rounds": runs[0]["rounds"],
        "local_steps": runs[0]["local_steps"],
        "sites": runs[0]["sites"],
        "arms": arms,
        "secagg_abs_diff": diffs,
    }


def privacy_goals(cases: list[dict[str, Any]]) -> list[Goal]:
    """Issue 12's learning goal per task kind: |secure aggregation - plain| on every seed <= 0.005."""
    out = []
    for c in cases:
        if c["secagg_abs_diff"]:
            worst = max(c["secagg_abs_diff"])
            out.append(
                goal(
                    f"{c['task']}: |secure aggregation - plain fedavg| ({c['metric']}, worst seed)",
                    worst,
                    SECAGG_TOLERANCE,
                    worst <= SECAGG_TOLERANCE,
                )
            )
    return out


# --- rendering --------------------------------------------------------------------------------------
def _pm(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def privacy_tables(cases: list[dict[str, Any]]) -> str:
    head = (
        "task | metric | arm | seeds | sigma | q | epsilon spent (max site) | metric (mean ± sd) | "
        "minus non-private | per seed | seconds per arm"
    )
    rows = []
    for c in cases:
        for name, a in c["arms"].items():
            dp = a["sigma"] > 0
            rows.append(
                (
                    c["task"],
                    c["metric"],
                    name
                    + (
                        f" (unmask error <= {a['unmask_error']:.1e})" if a["unmask_error"] is not None else ""
                    ),
                    len(a["seeds"]),
                    f"{a['sigma']:.3g}" if dp else "-",
                    f"{a['sample_rate']:.3g}" if dp else "-",
                    f"{a['epsilon']:.3f}" if dp else "-",
                    _pm(a["metric"]),
                    "" if name == PLAIN else _pm(a["minus_plain"]),
                    ", ".join(f"{v:.4f}" for v in a["values"]),
                    f"{a['seconds'][0]:.0f}",
                )
            )
    return table(head, rows)


def plot_metric_vs_epsilon(cases: list[dict[str, Any]], path: Path) -> Path:
    """One panel per task: DP-SGD's metric (mean ± sd over seeds) against epsilon, with the non-private
    and secure-aggregation arms as horizontal lines."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 3.8), squeeze=False)
    for ax, c in zip(axes[0], cases, strict=True):
        dp = sorted(
            ((a["target_epsilon"], a) for a in c["arms"].values() if a["target_epsilon"] > 0),
            key=lambda t: t[0],
        )
        if dp:
            xs = [e for e, _ in dp]
            ax.errorbar(
                xs,
                [a["metric"][0] for _, a in dp],
                yerr=[a["metric"][1] for _, a in dp],
                marker="o",
                capsize=3,
                color="tab:red",
                label="DP-SGD",
            )
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(xs, [f"{e:g}" for e in xs])
        for name, color, style in ((PLAIN, "tab:green", "solid"), (SECAGG, "tab:blue", "dashed")):
            a = c["arms"].get(name)
            if a:
                ax.axhline(
                    a["metric"][0], color=color, linestyle=style, label=f"{name} ({a['metric'][0]:.3f})"
                )
        seeds = max(len(a["seeds"]) for a in c["arms"].values())
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("epsilon (delta 1e-5, per site)")
        ax.set_ylabel(f"final {c['metric']}")
        ax.set_title(
            f"{c['task']} alpha={c['alpha']}, {c['rounds']}x{c['local_steps']} ({seeds} seeds)", fontsize=9
        )
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
