"""`swarm bench compression`: what each `[exchange] compression` saves in bytes and costs in metric.

One process plays every site, as `swarm bench learning`'s swarm arm does (the same BundleTrainer, the
task's fedavg between rounds, no chain and no network), with the daemon's own compression path in
between: each site's difference to the round's model goes through `train.residual.UpdateCompressor`
(top-k's residual in a real state dir), and the leader's side folds `compress.decompressed` views into
the rule. Every mode of one seed trains on the same batches from the same start (torch's generator is
seeded per arm), so what differs between arms is the compression alone.

Bytes are the codec's wire size of each update (manifest plus tensor bytes). A leader-topology round
moves N - 1 updates to the leader and N - 1 copies of the merged model out; the merged model is not
compressed (its hash is on chain), so the whole round's ratio is reported beside the updates' one.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from swarmd.bench.learning import BUNDLE_FOR, bench_task
from swarmd.bench.report import Goal, Report, Step, goal, mean_sd, table
from swarmd.codec import encode
from swarmd.compress import Encoding, decompressed
from swarmd.errors import UsageError
from swarmd.merge import Update, apply_diff, make_diff, rule_for
from swarmd.ops.taskedit import derived_task
from swarmd.task import ExchangeSettings, Task, WeightKind, load_task
from swarmd.train import BundleTrainer, generate_demo_data, initial_weights
from swarmd.train.residual import UpdateCompressor

MODES = ("none", "fp16", "bf16", "int8", "topk")
INT8_BYTES = 0.27  # goal: an int8 update is at most this share of the uncompressed one
INT8_METRIC = 0.01  # goal: the int8 swarm's final metric within this of the uncompressed one's


def wire_size(state: dict[str, torch.Tensor]) -> int:
    """Bytes of an update on the wire: its manifest and its tensors."""
    manifest, _ = encode(state)
    return len(manifest.canonical_bytes()) + manifest.total_nbytes


def _arm(task: Task, datalists: list[Path], test: Path, workdir: Path, seed: int) -> dict[str, Any]:
    """The swarm arm of one mode: final metric, per-round metric, bytes and coding time per update."""
    enc = Encoding.of(task.exchange)
    names = [f"site-{i + 1}" for i in range(len(datalists))]
    trainers = [
        BundleTrainer(task, dl, device="cpu", threads=0, workdir=workdir / f"train-{i}", name=n)
        for i, (n, dl) in enumerate(zip(names, datalists, strict=True))
    ]
    coders = [UpdateCompressor(enc, workdir / f"state-{i}", task.hash) for i in range(len(names))]
    rule, model = rule_for(task.swarm), initial_weights(task)
    curve: list[dict[str, Any]] = []
    sizes: list[int] = []
    plain_sizes: list[int] = []
    coding = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for t in trainers:
            t.initialize()
        try:
            for r in range(task.swarm.rounds):
                rule.begin(model)
                for i, t in enumerate(trainers):
                    result = t.train(model, round=r)
                    weights = result.weights
                    diff = weights if result.weight_type == WeightKind.DIFF else make_diff(weights, model)
                    t0 = time.perf_counter()
                    sent = coders[i].compress(r, diff)
                    view = decompressed(sent, model, enc, names[i])
                    rule.add(Update(names[i], view, result.n_samples))
                    coding += time.perf_counter() - t0
                    sizes.append(wire_size(sent))
                    plain_sizes.append(wire_size(diff))
                model = apply_diff(model, rule.result())
                curve.append({"round": r + 1, **trainers[0].evaluate(model, test)})
        finally:
            for t in trainers:
                t.finalize()
    return {
        "mode": enc.mode,
        "metrics": {k: v for k, v in curve[-1].items() if k != "round"},
        "curve": curve,
        "update_bytes": sum(sizes) / len(sizes),
        "plain_update_bytes": sum(plain_sizes) / len(plain_sizes),
        "model_bytes": wire_size(model),
        "coding_ms_per_update": 1000 * coding / len(sizes),
    }


def run_compression(
    task_kind: str, *, sites: int, rounds: int, local_steps: int, alpha: float, seed: int, topk_ratio: float
) -> dict[str, Any]:
    """Every mode on one seed's data: the swarm arm of each, from the same start on the same batches."""
    base = bench_task(task_kind, rounds, local_steps)
    base = replace(base, swarm=replace(base.swarm, send=WeightKind.DIFF))  # what compression needs
    arms = []
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-compression-") as tmp:
        root = Path(tmp)
        demo = generate_demo_data(root / "data", sites=sites, task=task_kind, alpha=alpha, seed=seed)
        for mode in MODES:
            exchange = ExchangeSettings(compression=mode, topk_ratio=topk_ratio if mode == "topk" else 0.01)
            t0 = time.perf_counter()
            arm = _arm(
                replace(base, exchange=exchange), demo.site_datalists, demo.test_datalist, root / mode, seed
            )
            arms.append({**arm, "seconds": time.perf_counter() - t0})
    return {"task": task_kind, "sites": sites, "rounds": rounds, "local_steps": local_steps, "alpha": alpha,
            "seed": seed, "topk_ratio": topk_ratio, "arms": arms}  # fmt: skip


def compression_steps(
    quick: bool = False,
    *,
    seeds: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    sites: int = 3,
    alpha: float = 1.0,
    task: str = "classification",
    topk_ratio: float = 0.01,
) -> list[Step]:
    if task not in BUNDLE_FOR:
        raise UsageError(f"--task must be one of {', '.join(BUNDLE_FOR)}, got {task!r}")
    for flag, value in (("seeds", seeds), ("rounds", rounds), ("local-steps", local_steps), ("sites", sites)):
        if value < 1:
            raise UsageError(f"--{flag} must be at least 1, got {value}")
    if not 0.0 < topk_ratio <= 1.0:
        raise UsageError(f"--topk-ratio must be in (0, 1], got {topk_ratio}")
    if quick:
        seeds, rounds, local_steps = 1, min(rounds, 2), min(local_steps, 3)
    run = partial(run_compression, task, sites=sites, rounds=rounds, local_steps=local_steps, alpha=alpha)
    return [(f"{task} seed {s}", partial(run, seed=s, topk_ratio=topk_ratio)) for s in range(seeds)]


def _metric_key(metrics: dict[str, float]) -> str:
    for key in ("auc", "dice", "accuracy"):
        if key in metrics:
            return key
    return sorted(metrics)[0]


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode, over the seeds: the final metric, its difference to uncompressed, and the byte ratios."""
    key = _metric_key(runs[0]["arms"][0]["metrics"])
    n = runs[0]["sites"]
    out = []
    for mode in MODES:
        arms = [next(a for a in run["arms"] if a["mode"] == mode) for run in runs]
        plain = [next(a for a in run["arms"] if a["mode"] == "none") for run in runs]
        deltas = [a["metrics"][key] - p["metrics"][key] for a, p in zip(arms, plain, strict=True)]
        a0 = arms[0]
        update_ratio = a0["update_bytes"] / a0["plain_update_bytes"]
        round_bytes = (n - 1) * (a0["update_bytes"] + a0["model_bytes"])
        plain_round = (n - 1) * (a0["plain_update_bytes"] + a0["model_bytes"])
        out.append({
            "mode": mode, "metric": key, "final": mean_sd(a["metrics"][key] for a in arms),
            "delta": mean_sd(deltas), "worst_delta": min(deltas), "update_bytes": a0["update_bytes"],
            "update_ratio": update_ratio, "round_ratio": round_bytes / plain_round,
            "coding_ms": mean_sd(a["coding_ms_per_update"] for a in arms),
        })  # fmt: skip
    return out


def compression_goals(rows: list[dict[str, Any]]) -> list[Goal]:
    int8 = next(r for r in rows if r["mode"] == "int8")
    delta = int8["delta"][0]
    ratio = int8["update_ratio"]
    return [
        goal("int8: update bytes / uncompressed", ratio, INT8_BYTES, ratio <= INT8_BYTES),
        goal(f"int8: |final {int8['metric']} - uncompressed| (mean over seeds)", abs(delta), INT8_METRIC,
             abs(delta) <= INT8_METRIC),
    ]  # fmt: skip


def compression_report(runs: list[dict[str, Any]], quick: bool, load_at_start: float) -> Report:
    rows = summarize(runs)
    first = runs[0]
    lines = [
        table(
            ["mode", f"final {rows[0]['metric']}", "minus uncompressed", "worst seed", "MB per update",
             "update / uncompressed", "round / uncompressed", "compress + fold ms per update"],
            [[r["mode"], _pm(r["final"]), _pm(r["delta"]), f"{r['worst_delta']:+.4f}",
              f"{r['update_bytes'] / 1e6:.2f}", f"{r['update_ratio']:.3f}", f"{r['round_ratio']:.3f}",
              _pm(r["coding_ms"], 0)] for r in rows],
        )
    ]  # fmt: skip
    setup = (
        f"{first['task']} ({BUNDLE_FOR[first['task']]}), {first['sites']} sites, "
        f"Dirichlet alpha {first['alpha']}, "
        f"{first['rounds']} rounds x {first['local_steps']} local steps, fedavg of differences, seeds "
        f"{', '.join(str(r['seed']) for r in runs)}, topk_ratio {first['topk_ratio']}; load average at start "
        f"{load_at_start:.2f}."
    )
    notes = [
        setup,
        "'round / uncompressed' counts a leader-topology round: N - 1 updates in, N - 1 merged models out "
        "(the merged model travels uncompressed: its hash is on chain). The byte goal is on the updates. "
        "'compress + fold' times the site's compression and the leader's decoding fold into fedavg (the "
        "'none' row is the fold alone).",
    ]
    if quick:
        notes.append("**Quick mode**: one seed of 2 rounds x 3 steps; the metric says nothing about quality.")
    return Report(
        "compression", {"runs": runs, "summary": rows}, compression_goals(rows), "\n".join(lines), [], notes
    )


def _pm(ms: tuple[float, float], digits: int = 4) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def load_average() -> float:
    return os.getloadavg()[0]


def compressed_task(src: Path, mode: str) -> Path:
    """`src` (a bench's swarm.toml) sending differences compressed with `mode` (`swarm bench wan
    --compression`), written beside it; `src` itself when `mode` is "none"."""
    if mode == "none":
        return src
    out = derived_task(src, src.with_name(f"swarm-{mode}.toml"), swarm={"send": "diff"})
    with out.open("a", encoding="utf-8") as f:
        f.write(f'\n[exchange]\ncompression = "{mode}"\n')
    load_task(out)  # refused here, by name, if the mode does not compose with the task
    return out
