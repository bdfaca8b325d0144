"""DP-SGD's cost per step on the CPU: each example bundle trained privately and not, rounds interleaved.

Two BundleTrainers per bundle on the same generated site (one turned private with Opacus at the task's
batch/n sampling rate), one warm-up round each, then rounds taken in turn, so load from anything else on
the machine falls on both. Poisson sampling draws batch/n * n = batch samples per step on average, as
many as the plain loader's batches. Time is the process's CPU time on one thread, which other processes do not
inflate; wall time is reported beside it. The goal (issue 13): DP-SGD <= 2.5x a plain step.
`python -m swarmd.bench.dp_sgd [quick]` prints the table; `dp_sgd_report` makes a Report.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from swarmd.bench.report import Report, goal, table
from swarmd.bench.train import BUNDLES
from swarmd.task import load_task
from swarmd.train import (
    BundleTrainer,
    configure_threads,
    example_task_file,
    generate_demo_data,
    initial_weights,
)

GOAL_RATIO = 2.5


def _trainers(name: str, steps: int, tmp: Path) -> dict[bool, BundleTrainer]:
    task = load_task(example_task_file(name))
    task = replace(task, swarm=replace(task.swarm, local_steps=steps))
    demo = generate_demo_data(tmp / name, sites=1, task=BUNDLES[name], alpha=0.5, seed=3, n_per_site=48)
    out = {}
    for private in (False, True):
        tr = BundleTrainer(
            task, demo.site_datalists[0], device="cpu", threads=1, workdir=tmp / f"w-{private}"
        )
        tr.initialize()
        if private:
            tr.make_private(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=tr.batch_size / tr.n_train)
        out[private] = tr
    return out


def _bench_one(name: str, *, steps: int, rounds: int, tmp: Path) -> dict[str, Any]:
    trainers = _trainers(name, steps, tmp)
    weights = initial_weights(trainers[False].task)
    cpu: dict[bool, list[float]] = {False: [], True: []}
    wall: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds + 1):
        for private, tr in trainers.items():
            c0 = time.process_time()
            res = tr.train(weights, round=r)
            if r:  # round 0 warms up
                cpu[private].append((time.process_time() - c0) / res.steps)
                wall[private].append(res.seconds / res.steps)
    for tr in trainers.values():
        tr.finalize()
    plain, dp = statistics.median(cpu[False]), statistics.median(cpu[True])
    return {
        "bundle": name,
        "batch": trainers[False].batch_size,
        "n_train": trainers[False].n_train,
        "steps": steps,
        "rounds": rounds,
        "plain_cpu_ms": 1000 * plain,
        "private_cpu_ms": 1000 * dp,
        "plain_wall_ms": 1000 * statistics.median(wall[False]),
        "private_wall_ms": 1000 * statistics.median(wall[True]),
        "ratio": dp / plain,
    }


def run_dp_sgd_bench(quick: bool = False) -> dict[str, Any]:
    steps, rounds = (3, 1) if quick else (10, 5)
    configure_threads(1)
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-dpsgd-") as tmp:
        results = [_bench_one(name, steps=steps, rounds=rounds, tmp=Path(tmp)) for name in BUNDLES]
    return {"bench": "dp_sgd", "quick": quick, "results": results}


def dp_sgd_report(result: dict[str, Any]) -> Report:
    goals = [
        goal(
            f"DP-SGD step / plain step, {r['bundle']} (CPU)", r["ratio"], GOAL_RATIO, r["ratio"] <= GOAL_RATIO
        )
        for r in result["results"]
    ]
    return Report("dp_sgd", result, goals, dp_sgd_table(result), [])


def dp_sgd_table(result: dict[str, Any]) -> str:
    head = (
        "bundle | batch | n | steps x rounds | plain CPU ms/step | DP-SGD CPU ms/step | ratio | "
        "wall ms (plain, DP)"
    )
    rows = [
        (
            r["bundle"],
            r["batch"],
            r["n_train"],
            f"{r['steps']} x {r['rounds']}",
            f"{r['plain_cpu_ms']:.0f}",
            f"{r['private_cpu_ms']:.0f}",
            f"{r['ratio']:.2f}",
            f"{r['plain_wall_ms']:.0f}, {r['private_wall_ms']:.0f}",
        )
        for r in result["results"]
    ]
    return table(head, rows)


if __name__ == "__main__":  # pragma: no cover
    print(dp_sgd_table(run_dp_sgd_bench(quick=len(sys.argv) > 1 and sys.argv[1] == "quick")))
