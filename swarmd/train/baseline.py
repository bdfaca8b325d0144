"""Baselines for the learning-quality benchmark, with the same bundle and the same step budget:

- centralized: every site's data pooled in one place (the upper bound swarm learning aims for);
- local-only: each site trains alone on its own data (what a hospital gets without the swarm).

Both run through BundleTrainer, so they train exactly like a swarm site does, only without merging.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from swarmd.errors import DataError, UsageError
from swarmd.scores import Scores
from swarmd.task import Task, WeightKind
from swarmd.train.data import read_datalist
from swarmd.train.trainer import BundleTrainer
from swarmd.train.weights import initial_weights


@dataclass(frozen=True)
class BaselineResult:
    name: str  # "centralized" or the site's name
    metrics: Scores  # on the held-out test set
    steps: int
    n_train: int
    seconds: float
    curve: tuple[tuple[int, Scores], ...] = ()  # (steps so far, metrics) at each evaluation


def pooled_datalist(datalists: Sequence[Path], out: Path) -> Path:
    """One datalist holding every entry of `datalists` (absolute paths), for centralized training."""
    doc: dict[str, list[dict[str, object]]] = {"training": [], "validation": []}
    for path in datalists:
        for section in ("training", "validation"):
            try:
                doc[section].extend(read_datalist(path, section).items)
            except DataError:
                if section == "training":
                    raise  # a list without a validation section still pools; one without training not
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return out


def _with_steps(task: Task, steps: int) -> Task:
    # Rounds here are only evaluation points; weights are carried over unchanged between them.
    return replace(task, swarm=replace(task.swarm, local_steps=steps, send=WeightKind.WEIGHTS))


def train_alone(
    task: Task,
    datalist: Path,
    test_datalist: Path,
    *,
    steps: int,
    workdir: Path,
    name: str,
    eval_every: int = 0,
    device: str = "cpu",
    threads: int = 0,
    weights: dict[str, torch.Tensor] | None = None,
) -> BaselineResult:
    """Train `steps` iterations on `datalist` from the task's initial weights; metrics on the test set."""
    if steps < 1:
        raise UsageError(f"steps must be >= 1, got {steps}")
    chunk = eval_every if 0 < eval_every < steps else steps
    trainer = BundleTrainer(
        _with_steps(task, chunk), datalist, device=device, threads=threads, workdir=workdir, name=name
    )
    start = time.perf_counter()
    trainer.initialize()
    try:
        w = weights if weights is not None else initial_weights(task)
        done, curve = 0, []
        while done < steps:
            w = trainer.train(w, round=done // chunk).weights
            done += chunk
            curve.append((done, trainer.evaluate(w, test_datalist)))
        return BaselineResult(
            name, curve[-1][1], done, trainer.n_train, time.perf_counter() - start, tuple(curve)
        )
    finally:
        trainer.finalize()


def centralized(
    task: Task,
    site_datalists: Sequence[Path],
    test_datalist: Path,
    *,
    steps: int,
    workdir: Path,
    eval_every: int = 0,
    device: str = "cpu",
    threads: int = 0,
) -> BaselineResult:
    """All sites' data pooled in one place, trained `steps` iterations."""
    pooled = pooled_datalist(site_datalists, workdir / "pooled.json")
    return train_alone(
        task,
        pooled,
        test_datalist,
        steps=steps,
        workdir=workdir,
        name="centralized",
        eval_every=eval_every,
        device=device,
        threads=threads,
    )


def local_only(
    task: Task,
    site_datalists: Sequence[Path],
    test_datalist: Path,
    *,
    steps: int,
    workdir: Path,
    eval_every: int = 0,
    device: str = "cpu",
    threads: int = 0,
) -> list[BaselineResult]:
    """Each site alone on its own data, `steps` iterations each; named site-1, site-2, ..."""
    return [
        train_alone(
            task,
            dl,
            test_datalist,
            steps=steps,
            workdir=workdir / f"local-{i + 1}",
            name=f"site-{i + 1}",
            eval_every=eval_every,
            device=device,
            threads=threads,
        )
        for i, dl in enumerate(site_datalists)
    ]
