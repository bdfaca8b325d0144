"""Fixtures for the training tests: small generated multi-site data sets and tasks with 2 local steps.

`demo_classification` / `demo_segmentation` are candidates for tests/conftest.py: the e2e tests
need the same generated data.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from swarmd.task import Task, load_task
from swarmd.train import example_task_file, generate_demo_data
from swarmd.train.demodata import DemoData


def _task(bundle: str, **swarm: object) -> Task:
    task = load_task(example_task_file(bundle))
    return replace(task, swarm=replace(task.swarm, **swarm))


@pytest.fixture(scope="session")
def demo_classification(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    out = tmp_path_factory.mktemp("demo-cls")
    return generate_demo_data(out, sites=2, task="classification", alpha=0.5, seed=3, n_per_site=12, n_test=8)


@pytest.fixture(scope="session")
def demo_segmentation(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    out = tmp_path_factory.mktemp("demo-seg")
    return generate_demo_data(out, sites=2, task="segmentation", alpha=0.5, seed=3, n_per_site=6, n_test=4)


@pytest.fixture(scope="session")
def demo_signal(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    out = tmp_path_factory.mktemp("demo-sig")
    return generate_demo_data(out, sites=2, task="signal", alpha=100.0, seed=3, n_per_site=24, n_test=16)


@pytest.fixture(scope="session")
def cls_task() -> Task:
    return _task("cxr_densenet", local_steps=2)


@pytest.fixture(scope="session")
def seg_task() -> Task:
    return _task("tumor_unet", local_steps=2)


@pytest.fixture
def make_task():
    return _task


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def supervised():
    """A real MONAI SupervisedTrainer over a toy network: one epoch of `steps` iterations, Adam, MSE."""
    from monai.engines import SupervisedTrainer

    def make(net: torch.nn.Module, loader, steps: int) -> SupervisedTrainer:
        return SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=1,
            train_data_loader=loader,
            network=net,
            optimizer=torch.optim.Adam(net.parameters(), lr=0.05),
            loss_function=torch.nn.MSELoss(),
            epoch_length=steps,
        )

    return make
