"""The driver's training against a fake trainer (the real one runs ahead in tests/e2e/test_sharded_swarm.py):
a sharded round's run ahead is the next round's training when that round opens on the same base, is
waited out and replaced when it opens on another, is never started where a discarded run would have
moved per-site state on (SCAFFOLD, FedBN, DP-SGD, secure aggregation) or in the leader topology, and a
stop aborts it."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
import torch

from swarmd.daemon.plumbing import StopRequested
from swarmd.daemon.rounds import RoundDriver
from swarmd.errors import TrainingError
from swarmd.task import DPMechanism, Task, WeightKind, load_task
from swarmd.train import BUNDLES_DIR
from swarmd.train.trainer import TrainResult

BASE = {"w": torch.zeros(3)}
H0, H1 = b"\x01" * 32, b"\x02" * 32


class FakeTrainer:
    """Records each call's round and starting weights; each takes `seconds` unless aborted."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, float]] = []
        self._abort = threading.Event()

    def train(self, weights: dict[str, torch.Tensor], round: int) -> TrainResult:
        self.calls.append((round, float(weights["w"][0])))
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if self._abort.is_set():
                self._abort.clear()
                raise TrainingError("aborted")
            time.sleep(0.005)
        w = {"w": weights["w"] + 1}
        return TrainResult(w, WeightKind.WEIGHTS, 4, 0.5, {}, self.seconds, 1)

    def abort(self) -> None:
        self._abort.set()


def _task(topology: str = "sharded", **changes: object) -> Task:
    task = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")
    swarm = {k: v for k, v in changes.items() if hasattr(task.swarm, k)}
    privacy = {k: v for k, v in changes.items() if hasattr(task.privacy, k)}
    return dataclasses.replace(
        task,
        exchange=dataclasses.replace(task.exchange, topology=topology),
        swarm=dataclasses.replace(task.swarm, rounds=5, **swarm),
        privacy=dataclasses.replace(task.privacy, **privacy),
    )


@pytest.fixture
def make(unit_driver):
    def build(task: Task, trainer: FakeTrainer) -> RoundDriver:
        d = unit_driver(task=task)
        d.trainer = trainer
        return d

    return build


async def test_the_run_ahead_on_the_same_base_is_the_rounds_training(make):
    trainer = FakeTrainer()
    d = make(_task(), trainer)
    await d.train_ahead(2, H0, BASE)
    await asyncio.sleep(0.05)
    assert trainer.calls == [(2, 0.0)]  # started before round 2 opened
    result = await d.train(BASE, 2, H0)
    assert trainer.calls == [(2, 0.0)]  # and not run again
    assert torch.equal(result.weights["w"], torch.ones(3))


async def test_a_round_opened_on_another_base_waits_the_run_ahead_out_and_trains_again(make):
    trainer = FakeTrainer()
    d = make(_task(), trainer)
    await d.train_ahead(2, H0, BASE)
    other = {"w": torch.full((3,), 5.0)}
    result = await d.train(other, 2, H1)
    assert trainer.calls == [(2, 0.0), (2, 5.0)]
    assert torch.equal(result.weights["w"], torch.full((3,), 6.0))
    # a run ahead for another round is not this round's either
    await d.train_ahead(3, H0, BASE)
    await d.train(BASE, 4, H0)
    assert trainer.calls[2:] == [(3, 0.0), (4, 0.0)]


@pytest.mark.parametrize(
    "task",
    [
        _task("leader"),
        _task(scaffold=True),
        _task(local_layers=("batchnorm",)),
        _task(mechanism=DPMechanism.SITE, clip=1.0, noise_multiplier=1.0),
        _task(secure_aggregation=True),
    ],
    ids=["leader_topology", "scaffold", "fedbn", "dp", "secure_aggregation"],
)
async def test_no_run_ahead_where_a_discarded_one_would_move_site_state_on_or_no_model_is_early(make, task):
    trainer = FakeTrainer()
    d = make(task, trainer)
    await d.train_ahead(2, H0, BASE)
    await asyncio.sleep(0.05)
    assert trainer.calls == []
    await d.train(BASE, 2, H0)
    assert trainer.calls == [(2, 0.0)]


async def test_no_run_ahead_past_the_last_round(make):
    trainer = FakeTrainer()
    d = make(_task(), trainer)
    await d.train_ahead(5, H0, BASE)  # rounds = 5: round 5 is never played
    await asyncio.sleep(0.05)
    assert trainer.calls == []


async def test_a_stop_aborts_the_run_ahead_the_round_waits_on(make):
    trainer = FakeTrainer(seconds=30)
    d = make(_task(), trainer)
    await d.train_ahead(2, H0, BASE)
    waiting = asyncio.ensure_future(d.train(BASE, 2, H0))
    await asyncio.sleep(0.1)
    d.stopping.set()
    with pytest.raises(StopRequested):
        await asyncio.wait_for(waiting, timeout=5)


async def test_stopping_the_driver_aborts_a_run_ahead_nobody_waits_on(make):
    trainer = FakeTrainer(seconds=30)
    d = make(_task(), trainer)
    await d.train_ahead(2, H0, BASE)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(d.stop_training_ahead(), timeout=5)
    assert trainer.calls == [(2, 0.0)] and d._ahead is None
