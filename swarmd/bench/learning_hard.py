"""`swarm bench learning --task hard`: the methods of issue 16 on a task where pooling clearly pays off.

One run is one (alpha, seed): the hard task's sites (`train.demohard`: 5 sites, each with one kind of a
faint finding, strong scanner shift, 40 images), then every arm on them, all from the same initial
model and, per arm, the same torch seed (the loaders' batches):

- `local_only`: each site alone, rounds x local_steps steps (S);
- `pooled_step`: all the data in one place, S steps (what the old bench compared with);
- `pooled_compute`: all the data in one place, N x S steps, the swarm's whole compute (the goals use it);
- the swarm arms (`ARMS`): fedavg, FedProx, FedBN (the BatchNorm bundle, BatchNorm kept local),
  `bnstats` (the BatchNorm bundle trained on merged statistics, `swarm.batchnorm_stats = "merged"`),
  SCAFFOLD, cyclic weight transfer, and each robust rule, each N x S steps in all.

A poisoning run is one seed at `POISON_ALPHA`: the last site sends a poisoned update every round
(`learning_poison`), under fedavg and each robust rule, next to the clean fedavg arm.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from swarmd.bench.learning_arms import Arm, Attacker, compute_matched_steps, cyclic_arm, swarm_arm
from swarmd.bench.learning_poison import ATTACKS
from swarmd.bench.report import Step
from swarmd.errors import UsageError
from swarmd.task import Task, WeightKind, load_task
from swarmd.train import example_task_file
from swarmd.train.baseline import centralized, local_only
from swarmd.train.demohard import generate_hard_data

GN_BUNDLE, BN_BUNDLE = "cxr_small", "cxr_small_bn"
ROBUST = ("median", "trimmed_mean", "geomedian", "krum", "multi_krum")
ARMS = ("fedavg", "fedprox", "fedbn", "bnstats", "scaffold", "cyclic", *ROBUST)
BN_ARMS = ("fedbn", "bnstats")  # the arms of the BatchNorm bundle
POISON_RULES = ("fedavg", *ROBUST)
ALPHAS = (0.1, 1.0)
POISON_ALPHA = 1.0
SITES, ROUNDS, LOCAL_STEPS = 5, 8, 8
PROX_MU = 0.01  # FedProx's mu: small against Adam-scale steps on a ~50k-parameter network
TRIM_RATIO = 0.2  # trimmed mean: cut one of five values at each end
KRUM_F = 1  # Krum's assumed Byzantine sites; multi_krum averages the n - f best-scored updates (Krum, m = 1)
QUICK = {"rounds": 1, "local_steps": 2, "arms": ("fedavg", "fedbn", "cyclic", "krum"), "attacks": ("scaled",)}


def arm_task(arm: str, rounds: int, local_steps: int) -> Task:
    """The hard task's settings for `arm` (an `ARMS` name): its bundle, merge rule and remedies."""
    if arm not in ARMS:
        raise UsageError(f"unknown arm {arm!r}", hint=f"choose from {', '.join(ARMS)}")
    base = load_task(example_task_file(BN_BUNDLE if arm in BN_ARMS else GN_BUNDLE))
    swarm = replace(
        base.swarm,
        rounds=rounds,
        local_steps=local_steps,
        send=WeightKind.WEIGHTS,
        merge="krum" if arm == "multi_krum" else arm if arm in ROBUST else "fedavg",
        trim_ratio=TRIM_RATIO,
        krum_f=KRUM_F,
        krum_m=SITES - KRUM_F if arm == "multi_krum" else 1,
        prox_mu=PROX_MU if arm == "fedprox" else 0.0,
        scaffold=arm == "scaffold",
        local_layers=base.swarm.local_layers if arm == "fedbn" else (),
        batchnorm_stats="merged" if arm == "bnstats" else "batch",
    )
    return replace(base, swarm=swarm)


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    """`fn()` with torch's generator seeded from `seed` and restored after, so each arm sees one order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _baselines(
    task: Task, dls: list[Path], test: Path, root: Path, seed: int, threads: int
) -> dict[str, Any]:
    steps = task.swarm.rounds * task.swarm.local_steps
    full = compute_matched_steps(len(dls), task.swarm.rounds, task.swarm.local_steps)
    alone = _seeded(
        seed, lambda: local_only(task, dls, test, steps=steps, workdir=root / "local", threads=threads)
    )
    pooled = {
        name: _seeded(
            seed, partial(centralized, task, dls, test, steps=n, workdir=root / name, threads=threads)
        )
        for name, n in (("pooled_step", steps), ("pooled_compute", full))
    }
    out: dict[str, Any] = {
        k: {"metrics": dict(v.metrics), "steps": v.steps, "seconds": v.seconds} for k, v in pooled.items()
    }
    out["local_only"] = [
        {"site": r.name, "metrics": dict(r.metrics), "steps": r.steps, "seconds": r.seconds} for r in alone
    ]
    return out


def _arm(
    arm: str,
    dls: list[Path],
    test: Path,
    root: Path,
    *,
    rounds: int,
    local_steps: int,
    seed: int,
    threads: int,
) -> Arm:
    task = arm_task(arm, rounds, local_steps)
    if arm == "cyclic":
        fn = partial(cyclic_arm, task, dls, test, workdir=root / arm, seed=seed, threads=threads)
    else:
        fn = partial(swarm_arm, task, dls, test, workdir=root / arm, threads=threads)
    result: Arm = _seeded(seed, fn)
    return result


def run_hard(
    alpha: float,
    seed: int,
    *,
    arms: Sequence[str] = ARMS,
    sites: int = SITES,
    rounds: int = ROUNDS,
    local_steps: int = LOCAL_STEPS,
    threads: int = 0,
) -> dict[str, Any]:
    """Local-only, both pooled arms and each of `arms` on the hard task's sites for (alpha, seed)."""
    kw: dict[str, int] = {"rounds": rounds, "local_steps": local_steps, "seed": seed, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-hard-") as tmp:
        root = Path(tmp)
        demo = generate_hard_data(root / "data", sites=sites, alpha=alpha, seed=seed)
        dls, test = demo.site_datalists, demo.test_datalist
        base = _baselines(arm_task("fedavg", rounds, local_steps), dls, test, root, seed, threads)
        results = {arm: _arm(arm, dls, test, root, **kw) for arm in arms}
    return {
        "bench": "learning",
        "task": "hard",
        "kind": "methods",
        "sites": sites,
        "alpha": alpha,
        "seed": seed,
        "rounds": rounds,
        "local_steps": local_steps,
        "site_labels": [list(s.class_counts) for s in demo.sites],
        **base,
        "arms": results,
    }


def run_poison(
    seed: int,
    *,
    attacks: Sequence[str] = ATTACKS,
    rules: Sequence[str] = POISON_RULES,
    alpha: float = POISON_ALPHA,
    sites: int = SITES,
    rounds: int = ROUNDS,
    local_steps: int = LOCAL_STEPS,
    threads: int = 0,
) -> dict[str, Any]:
    """Clean fedavg, fedavg without the last site, then each rule with the last site sending each attack,
    on the hard task's sites."""
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-poison-") as tmp:
        root = Path(tmp)
        demo = generate_hard_data(root / "data", sites=sites, alpha=alpha, seed=seed)
        dls, test = demo.site_datalists, demo.test_datalist
        clean = _seeded(
            seed,
            partial(
                swarm_arm,
                arm_task("fedavg", rounds, local_steps),
                dls,
                test,
                workdir=root / "clean",
                threads=threads,
            ),
        )
        # What a rule could at best recover: fedavg over the honest sites alone (the attacker's own data
        # is lost to any rule that resists it).
        honest = _seeded(
            seed,
            partial(
                swarm_arm,
                arm_task("fedavg", rounds, local_steps),
                dls[:-1],
                test,
                workdir=root / "honest",
                threads=threads,
            ),
        )
        poisoned: dict[str, dict[str, Arm]] = {}
        for attack in attacks:
            bad = Attacker(site=sites - 1, attack=attack, seed=seed)
            poisoned[attack] = {
                rule: _seeded(
                    seed,
                    partial(
                        swarm_arm,
                        arm_task(rule, rounds, local_steps),
                        dls,
                        test,
                        workdir=root / f"{attack}-{rule}",
                        threads=threads,
                        attacker=bad,
                    ),
                )
                for rule in rules
            }
    return {
        "bench": "learning",
        "task": "hard",
        "kind": "poison",
        "sites": sites,
        "alpha": alpha,
        "seed": seed,
        "rounds": rounds,
        "local_steps": local_steps,
        "poisoned_site": f"site-{sites}",
        "clean": clean,
        "honest": honest,
        "poisoned": poisoned,
    }


def hard_steps(
    quick: bool = False,
    *,
    seeds: int = 3,
    alphas: Sequence[float] = ALPHAS,
    arms: Sequence[str] = ARMS,
    poison: bool = True,
    rounds: int = ROUNDS,
    local_steps: int = LOCAL_STEPS,
) -> list[Step]:
    """One step per (alpha, seed), then one poisoning step per seed; `quick`: one alpha and seed, a round
    of two steps, four arms and one attack (a smoke run of every code path's shape)."""
    for a in arms:
        if a not in ARMS:
            raise UsageError(f"--arms: unknown arm {a!r}", hint=f"choose from {', '.join(ARMS)}")
    if any(not a > 0 for a in alphas) or not (alphas or poison):
        raise UsageError(
            f"--alphas must be positive numbers, got {list(alphas)}", hint="none: only poisoning"
        )
    attacks: Sequence[str] = ATTACKS
    if quick:
        rounds, local_steps = int(QUICK["rounds"]), int(QUICK["local_steps"])  # type: ignore[call-overload]
        arms, attacks, alphas, seeds = QUICK["arms"], QUICK["attacks"], alphas[:1], 1  # type: ignore[assignment]
    steps: list[Step] = [
        (
            f"hard alpha={alpha} seed {seed}",
            partial(run_hard, alpha, seed, arms=tuple(arms), rounds=rounds, local_steps=local_steps),
        )
        for alpha in alphas
        for seed in range(seeds)
    ]
    if poison:
        steps += [
            (
                f"hard poisoned, seed {seed}",
                partial(run_poison, seed, attacks=tuple(attacks), rounds=rounds, local_steps=local_steps),
            )
            for seed in range(seeds)
        ]
    return steps
