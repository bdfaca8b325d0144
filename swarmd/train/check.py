"""`swarm task check`: a task's bundle run once on a site's data, exactly as the site's daemon runs it.

The daemon's own start checks the contract by name and by count (`train.contract`) and then trains;
this check adds what only running shows: one training step from the task's initial weights and one
evaluation of the result (on the held-out list, or the site's own `validation` section). It reports
what it found, so an operator sees which network trains on how many items before joining a swarm.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from swarmd.scores import Scores
from swarmd.task import Task
from swarmd.train.bundle import build_network
from swarmd.train.data import read_datalist
from swarmd.train.local_layers import select_local
from swarmd.train.trainer import BundleTrainer
from swarmd.train.weights import initial_weights


@dataclass(frozen=True)
class CheckReport:
    """What `swarm task check` found: the bundle, its network, the items it loads, one step's numbers."""

    bundle: str
    network: str  # class name of the bundle's network_def
    parameters: int
    data_list: Path
    n_train: int  # training items the bundle loads (the site's fedavg weight)
    eval_list: Path
    n_val: int  # items evaluated
    steps: int
    loss: float  # mean training loss over the steps
    metrics: Scores  # the evaluator's metrics after the steps (an undefined one as its reason)
    warnings: tuple[str, ...]
    seconds: float


def check_task(
    task: Task,
    data_list: Path,
    *,
    eval_list: Path | None = None,
    steps: int = 1,
    device: str = "cpu",
    threads: int = 0,
) -> CheckReport:
    """Build the bundle on `data_list` as the daemon does (same overrides, same checks), train
    `steps` iterations and evaluate once. Raises BundleMismatch, DataError or TrainingError."""
    start = time.perf_counter()
    task = replace(task, swarm=replace(task.swarm, local_steps=steps))
    target = Path(eval_list).resolve() if eval_list is not None else Path(data_list).resolve()
    net = build_network(task.bundle, task.train_config)
    if task.swarm.local_layers:  # FedBN patterns that match nothing are refused here, before any data
        select_local(net, task.swarm.local_layers)
    with tempfile.TemporaryDirectory(prefix="swarm-task-check-") as work:
        trainer = BundleTrainer(
            task, data_list, device=device, threads=threads, workdir=Path(work), name="check"
        )
        try:
            trainer.initialize()
            result = trainer.train(initial_weights(task), round=0)
            metrics = trainer.evaluate(result.weights, target)
        finally:
            trainer.finalize()
    return CheckReport(
        bundle=trainer.info.name if trainer.info else task.bundle.name,
        network=type(net).__name__,
        parameters=sum(p.numel() for p in net.parameters()),
        data_list=trainer.data_list,
        n_train=trainer.n_train,
        eval_list=target,
        n_val=len(read_datalist(target, "validation").items),  # what the evaluator was checked to load
        steps=result.steps,
        loss=result.loss,
        metrics=metrics,
        warnings=trainer.contract.warnings,
        seconds=time.perf_counter() - start,
    )
