"""`swarm bench train`: local training throughput of the example bundles, per device.

For each bundle: generate a small site of demo data, build a BundleTrainer once, run one warm-up
round (kernel selection, caches), then time rounds of `task.swarm.local_steps` iterations exactly
as the daemon runs them, including the weight snapshot handed to the codec. Reports images/s and
voxels/s, milliseconds per optimiser step, and what the snapshot costs next to the round.
`train_report` renders the table (this bench holds no goals).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from swarmd.bench.report import Report, Step, table
from swarmd.task import WeightKind, load_task
from swarmd.train import BundleTrainer, example_task_file, generate_demo_data, initial_weights
from swarmd.train.bundle import read_bundle_info

BUNDLES = {"cxr_densenet": "classification", "tumor_unet": "segmentation"}


def _spatial_voxels(bundle: Path) -> int:
    import json

    meta = json.loads((bundle / "configs/metadata.json").read_text())
    return math.prod(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])


def _bench_one(
    name: str, device: str, *, steps: int, rounds: int, amp: bool, threads: int, tmp: Path
) -> dict:
    task = load_task(example_task_file(name))
    task = replace(task, swarm=replace(task.swarm, local_steps=steps, send=WeightKind.WEIGHTS))
    demo = generate_demo_data(
        tmp / f"data-{name}", sites=1, task=BUNDLES[name], alpha=100.0, seed=0, n_per_site=24, n_test=4
    )
    trainer = BundleTrainer(
        task, demo.site_datalists[0], device=device, amp=amp, threads=threads, workdir=tmp / f"work-{name}"
    )
    t0 = time.perf_counter()
    trainer.initialize()
    init_s = time.perf_counter() - t0
    weights = initial_weights(task)
    trainer.train(weights, round=0)  # warm-up
    seconds, samples = 0.0, 0.0
    for r in range(rounds):
        result = trainer.train(weights, round=r + 1)
        seconds += result.seconds
        samples += result.metrics["samples_seen"]
    t0 = time.perf_counter()
    trainer._collect()  # the one copy on the way to the codec, timed alone
    snapshot_s = time.perf_counter() - t0
    trainer.finalize()
    model_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    images_per_s = samples / seconds
    return {
        "bundle": name,
        "device": str(trainer.device),
        "amp": amp,
        "threads": torch.get_num_threads(),
        "input_channels": read_bundle_info(task.bundle).input.channels,
        "voxels_per_image": _spatial_voxels(task.bundle),
        "steps_per_round": steps,
        "round_s": seconds / rounds,
        "step_ms": 1000.0 * seconds / (rounds * steps),
        "images_per_s": images_per_s,
        "voxels_per_s": images_per_s * _spatial_voxels(task.bundle),
        "init_s": init_s,
        "model_mb": model_bytes / 2**20,
        "params": sum(t.numel() for t in weights.values() if t.is_floating_point()),
        "snapshot_ms": 1000.0 * snapshot_s,
    }


def run_train_bench(quick: bool = False, threads: int = 0) -> dict[str, Any]:
    """Throughput of both example bundles on the CPU, and on CUDA (plain and AMP) when present."""
    steps, rounds = (5, 1) if quick else (20, 3)
    runs: list[tuple[str, bool]] = [("cpu", False)]
    if torch.cuda.is_available():
        runs += [("cuda", False), ("cuda", True)]
    results = []
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-train-") as tmp:
        for device, amp in runs:
            for name in BUNDLES:
                results.append(
                    _bench_one(
                        name, device, steps=steps, rounds=rounds, amp=amp, threads=threads, tmp=Path(tmp)
                    )
                )
    return {"bench": "train", "quick": quick, "torch": torch.__version__, "results": results}


def train_steps(quick: bool = False, threads: int = 0) -> list[Step]:
    return [("both example bundles", partial(run_train_bench, quick, threads))]


def train_report(result: dict[str, Any]) -> Report:
    return Report("train", result, [], train_tables(result), [])


# --- rendering --------------------------------------------------------------------------------------
def train_tables(result: dict[str, Any]) -> str:
    head = (
        "bundle | device | AMP | threads | params | model MB | steps/round | ms/step | images/s | "
        "Mvoxels/s | snapshot ms | init s"
    )
    rows = [
        (
            r["bundle"],
            r["device"],
            r["amp"],
            r["threads"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['model_mb']:.1f}",
            r["steps_per_round"],
            f"{r['step_ms']:.0f}",
            f"{r['images_per_s']:.1f}",
            f"{r['voxels_per_s'] / 1e6:.2f}",
            f"{r['snapshot_ms']:.1f}",
            f"{r['init_s']:.1f}",
        )
        for r in result["results"]
    ]
    return table(head, rows)
