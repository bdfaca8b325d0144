"""The learning bench's in-process arms: a swarm of `BundleTrainer`s merged by a `swarmd.merge` rule, and
cyclic weight transfer; one process plays every site, with no chain and no network.

The swarm arm is the daemon's round in miniature: each site trains `local_steps` from the round's
model and the task's rule (`rule_for`: fedavg, a robust rule, SCAFFOLD's) merges the updates. The task's
remedies act where the daemon's do: FedProx and SCAFFOLD inside `BundleTrainer`, FedBN through
`LocalLayersTrainer` (each site keeps its BatchNorm layers; the arm's metric is then the mean over the
sites of each site's model, the merged shared layers plus its own). `[privacy]` goes through the
daemon's privacy steps (`private_swarm`), and one site may send a poisoned update (`learning_poison`).
Cyclic weight transfer passes one model from site to site, in a seeded random order each round.

Every arm is scored on the shared held-out test set after each round; the caller seeds torch's
generator (the loaders' shuffling) so the arms of one seed see the same batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from swarmd.bench.learning_poison import poison
from swarmd.errors import UsageError
from swarmd.merge import Update, apply_diff, rule_for
from swarmd.task import Task, WeightKind
from swarmd.train import BundleTrainer, LocalLayersTrainer, initial_model
from swarmd.train.trainer import Trainer

if TYPE_CHECKING:
    from swarmd.bench.private_swarm import SwarmPrivacy

State = dict[str, torch.Tensor]
Arm = dict[str, Any]  # {"metrics": final scores, "curve": [{"round": r, **scores}], "seconds": s, ...}


@dataclass(frozen=True)
class Attacker:
    """Site `site` (0-based) sends `poison(attack, ...)` instead of its honest update, every round."""

    site: int
    attack: str
    seed: int = 0


def compute_matched_steps(sites: int, rounds: int, local_steps: int) -> int:
    """Pooled training's steps when it gets the compute of the whole swarm: every site's rounds x steps."""
    return sites * rounds * local_steps


def visit_order(seed: int, round: int, sites: int) -> list[int]:
    """The cyclic arm's order of visits in `round`: a permutation of the sites drawn from (seed, round)."""
    return [int(i) for i in np.random.default_rng([seed, round, 7]).permutation(sites)]


def site_names(n: int) -> list[str]:
    return [f"site-{i + 1}" for i in range(n)]


def make_trainers(task: Task, datalists: Sequence[Path], workdir: Path, threads: int) -> list[Trainer]:
    """One initialized trainer per site; with FedBN (`local_layers`), each keeps its own local layers."""
    out: list[Trainer] = []
    for name, dl in zip(site_names(len(datalists)), datalists, strict=True):
        inner = BundleTrainer(task, dl, device="cpu", threads=threads, workdir=workdir / name, name=name)
        inner.initialize()
        out.append(
            LocalLayersTrainer(inner, task, workdir / name / "state") if task.swarm.local_layers else inner
        )
    return out


def evaluate(task: Task, trainers: Sequence[Trainer], model: State, test: Path) -> dict[str, float]:
    """The global model's scores on `test`; with FedBN, the mean over the sites of each site's model."""
    if not task.swarm.local_layers:
        return _numbers(trainers[0].evaluate(model, test))
    per_site = [_numbers(t.evaluate(model, test)) for t in trainers]
    keys = set.intersection(*(set(s) for s in per_site))
    return {k: float(np.mean([s[k] for s in per_site])) for k in sorted(keys)}


def _numbers(scores: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(scores).items() if isinstance(v, int | float)}


def _finish(trainers: Sequence[Trainer], curve: list[dict[str, Any]], start: float, **extra: Any) -> Arm:
    for t in trainers:
        t.finalize()
    final = {k: v for k, v in curve[-1].items() if k not in ("round", "privacy")} if curve else {}
    return {"metrics": final, "curve": curve, "seconds": time.perf_counter() - start, **extra}


def swarm_arm(
    task: Task,
    datalists: Sequence[Path],
    test: Path,
    *,
    workdir: Path,
    threads: int = 0,
    attacker: Attacker | None = None,
) -> Arm:
    """`task.swarm.rounds` rounds of the task's merge rule over one trainer per site."""
    from swarmd.bench.private_swarm import SwarmPrivacy, has_privacy  # the daemon's code: imported on use

    start = time.perf_counter()
    names = site_names(len(datalists))
    trainers = make_trainers(task, datalists, workdir, threads)
    privacy = None
    if has_privacy(task):
        privacy = SwarmPrivacy(task, trainers, names, workdir / "privacy")  # type: ignore[arg-type]
    rule = rule_for(task.swarm)
    model = initial_model(task)
    curve: list[dict[str, Any]] = []
    try:
        for r in range(task.swarm.rounds):
            point: dict[str, Any] | None = None
            if privacy is None:
                merged: State | None = _plain_round(rule, trainers, names, model, r, attacker)
            else:
                merged, point = _private_round(privacy, trainers, model, r)  # type: ignore[arg-type]
            if merged is not None:
                model = apply_diff(model, merged) if task.swarm.send == WeightKind.DIFF else merged
            curve.append({"round": r + 1, **evaluate(task, trainers, model, test)})
            if point is not None:
                curve[-1]["privacy"] = point
    finally:
        extra = {} if privacy is None else {"plans": privacy.plans(), "unmask_error": privacy.unmask_error}
        arm = _finish(trainers, curve, start, **extra)
    return arm


def _plain_round(
    rule: Any, trainers: Sequence[Trainer], names: list[str], model: State, r: int, attacker: Attacker | None
) -> State:
    rule.begin(model)
    for i, t in enumerate(trainers):
        result = t.train(model, round=r)
        weights = result.weights
        if attacker is not None and i == attacker.site:
            if result.weight_type != WeightKind.WEIGHTS:
                raise UsageError("the poisoned site needs a task that sends whole weights")
            weights = poison(attacker.attack, model, weights, seed=attacker.seed * 1000 + r)
        rule.add(Update(names[i], weights, result.n_samples))
    merged: State = rule.result()
    return merged


def _private_round(
    privacy: SwarmPrivacy, trainers: list[BundleTrainer], model: State, r: int
) -> tuple[State | None, dict[str, Any]]:
    """One round of the sites within their budget; None when none is (the model stays as it is)."""
    active = privacy.active()
    updates = []
    for i in active:
        result = trainers[i].train(model, round=r)
        update = privacy.privatize(i, result.weights, model)
        updates.append(Update(privacy.names[i], update, result.n_samples))
    merged = privacy.merge(r, model, updates) if updates else None
    return merged, privacy.spent(r, active)


def cyclic_arm(
    task: Task, datalists: Sequence[Path], test: Path, *, workdir: Path, seed: int, threads: int = 0
) -> Arm:
    """Cyclic weight transfer: each round the model visits every site once, in `visit_order`; each site
    trains `local_steps` from the model it receives and passes its weights on."""
    if task.swarm.send != WeightKind.WEIGHTS or task.swarm.local_layers or task.swarm.scaffold:
        raise UsageError("the cyclic arm passes whole weights: no diffs, FedBN or SCAFFOLD")
    start = time.perf_counter()
    trainers = make_trainers(task, datalists, workdir, threads)
    model = initial_model(task)
    curve: list[dict[str, Any]] = []
    orders = []
    try:
        for r in range(task.swarm.rounds):
            order = visit_order(seed, r, len(trainers))
            for i in order:
                model = trainers[i].train(model, round=r).weights
            orders.append(order)
            curve.append({"round": r + 1, **evaluate(task, trainers, model, test)})
    finally:
        arm = _finish(trainers, curve, start, orders=orders)
    return arm
