"""`swarm bench learning`: final test metric of swarm vs centralized vs each site alone, non-IID.

One process plays every site: the same BundleTrainer each daemon runs, one per site, and the
task's merge rule from `swarmd.merge` between rounds, with no chain and no network. All three
arms get the same step budget per site (rounds x local_steps) and are scored on the same shared
held-out test set, so the numbers answer one question: does joining the swarm pay off for a site
whose own data is skewed?
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from swarmd.merge import Update, apply_diff, rule_for
from swarmd.task import Task, WeightKind, load_task
from swarmd.train import BundleTrainer, example_task_file, generate_demo_data, initial_weights
from swarmd.train.baseline import centralized, local_only

BUNDLE_FOR = {"classification": "cxr_densenet", "segmentation": "tumor_unet"}


def _swarm(
    task: Task, datalists: list[Path], test: Path, *, workdir: Path, threads: int
) -> tuple[dict[str, float], list[dict[str, Any]], float]:
    start = time.perf_counter()
    trainers = [
        BundleTrainer(
            task, dl, device="cpu", threads=threads, workdir=workdir / f"swarm-{i + 1}", name=f"site-{i + 1}"
        )
        for i, dl in enumerate(datalists)
    ]
    for t in trainers:
        t.initialize()
    rule = rule_for(task.swarm)
    model: dict[str, torch.Tensor] = initial_weights(task)
    curve = []
    try:
        for r in range(task.swarm.rounds):
            rule.begin(model)
            for i, t in enumerate(trainers):
                result = t.train(model, round=r)
                rule.add(Update(f"site-{i + 1}", result.weights, result.n_samples))
            merged = rule.result()
            model = apply_diff(model, merged) if task.swarm.send == "diff" else merged
            curve.append({"round": r + 1, **trainers[0].evaluate(model, test)})
    finally:
        for t in trainers:
            t.finalize()
    final = {k: v for k, v in curve[-1].items() if k != "round"}
    return final, curve, time.perf_counter() - start


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
    base = load_task(example_task_file(BUNDLE_FOR[task_kind]))
    task = replace(
        base, swarm=replace(base.swarm, rounds=rounds, local_steps=local_steps, send=WeightKind.WEIGHTS)
    )
    steps = rounds * local_steps
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-learning-") as tmp:
        root = Path(tmp)
        demo = generate_demo_data(root / "data", sites=sites, task=task_kind, alpha=alpha, seed=seed)
        dls, test = demo.site_datalists, demo.test_datalist
        swarm_final, curve, swarm_s = _swarm(task, dls, test, workdir=root, threads=threads)
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
        "swarm": {"metrics": swarm_final, "curve": curve, "seconds": swarm_s},
        "centralized": {"metrics": central.metrics, "seconds": central.seconds},
        "local_only": [{"site": r.name, "metrics": r.metrics, "seconds": r.seconds} for r in alone],
        "sites_detail": [
            {k: v for k, v in asdict(s).items() if k not in ("datalist", "scanner")} for s in demo.sites
        ],
    }
