"""DP-SGD in local training: task validation names Opacus-incompatible layers; a real private step runs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from swarmd.errors import TaskError, TrainingError
from swarmd.privacy.dp import plan_for
from swarmd.task import DPMechanism, PrivacySettings, Task, load_task
from swarmd.train import BUNDLES_DIR, BundleTrainer, initial_weights
from swarmd.train.private import check_private, unsupported_layers
from swarmd.train.weights import layout_of

SAMPLE = PrivacySettings(mechanism=DPMechanism.SAMPLE, noise_multiplier=1.0, clip=1.0, delta=1e-5)
TINY_NET = {
    "_target_": "DenseNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": "@num_classes",
    "init_features": 8,
    "growth_rate": 4,
    "block_config": [1, 1],
    "norm": ["group", {"num_groups": 2}],
}


def _bundle(tmp_path: Path, network_def: dict[str, object], local_steps: int = 1) -> Task:
    """A copy of the classification bundle with another network_def, as a task with DP-SGD on."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES_DIR / "cxr_densenet", bundle)
    cfg = bundle / "configs" / "train.json"
    doc = json.loads(cfg.read_text(encoding="utf-8"))
    doc["network_def"] = network_def
    cfg.write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "swarm.toml").write_text(
        f'[task]\nname = "tiny"\nbundle = "bundle"\n[swarm]\nlocal_steps = {local_steps}\n'
        '[privacy]\nmechanism = "sample"\nnoise_multiplier = 1.0\ndelta = 1e-5\n',
        encoding="utf-8",
    )
    return load_task(tmp_path / "swarm.toml")


def test_unsupported_layers_are_named() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, affine=False), nn.ReLU())
    assert unsupported_layers(net) == ["1 (BatchNorm2d)", "2 (BatchNorm2d)"]
    assert unsupported_layers(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))) == []


def test_a_batchnorm_bundle_fails_task_validation(tmp_path: Path) -> None:
    task = _bundle(tmp_path, {**TINY_NET, "norm": "batch"})
    with pytest.raises(TaskError, match=r"features\.norm0 \(BatchNorm2d\).*GroupNorm"):
        check_private(task)
    check_private(replace(task, privacy=replace(task.privacy, mechanism=DPMechanism.SITE)))  # no DP-SGD


@pytest.mark.parametrize("bundle", ["cxr_densenet", "tumor_unet"])
def test_example_bundles_are_opacus_compatible(bundle: str) -> None:
    task = load_task(BUNDLES_DIR / f"{bundle}.swarm.toml")
    check_private(replace(task, privacy=SAMPLE))


def test_one_real_dp_sgd_round(tmp_path: Path, demo_classification) -> None:  # type: ignore[no-untyped-def]
    task = _bundle(tmp_path, TINY_NET, local_steps=2)
    check_private(task)
    trainer = BundleTrainer(
        task, demo_classification.site_datalists[0], device="cpu", threads=1, workdir=tmp_path / "work"
    )
    trainer.initialize()
    plan = plan_for(
        replace(task.privacy, noise_multiplier=1000.0),  # noise far above any clipped gradient
        rounds=task.swarm.rounds,
        local_steps=task.swarm.local_steps,
        n_samples=trainer.n_train,
        batch_size=trainer.batch_size,
        n_sites=2,
        secure_aggregation=False,
    )
    assert plan is not None and plan.sample_rate == trainer.batch_size / trainer.n_train
    trainer.make_private(
        noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.clip, sample_rate=plan.sample_rate
    )
    start = initial_weights(task)
    result = trainer.train(start, round=0)
    assert result.steps == 2
    assert layout_of(result.weights) == layout_of(start)  # the bundle's own names: no Opacus prefix
    assert any(not torch.equal(start[k], result.weights[k]) for k in start if start[k].is_floating_point())
    # the last step's gradient is mostly noise: std sigma * C / batch = 1000 / 8 per coordinate
    grads = torch.cat([p.grad.flatten() for p in trainer._private.optimizer.params])  # type: ignore[union-attr]
    assert 100.0 < float(grads.std()) < 150.0
    with pytest.raises(TrainingError, match="before the first round"):
        trainer.make_private(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5)
    trainer.finalize()


def test_an_empty_poisson_sample_is_a_step_of_noise_alone(tmp_path: Path, demo_classification) -> None:  # type: ignore[no-untyped-def]
    """At q = 1e-9 every sample is empty: no forward pass, yet each step adds noise (as accounted)."""
    task = _bundle(tmp_path, {**TINY_NET, "norm": "instance"}, local_steps=2)  # fails on empty batches
    trainer = BundleTrainer(
        task, demo_classification.site_datalists[0], device="cpu", threads=1, workdir=tmp_path / "work"
    )
    trainer.initialize()
    trainer.make_private(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1e-9)
    start = initial_weights(task)
    result = trainer.train(start, round=0)
    assert result.steps == 2 and result.metrics["samples_seen"] == 0.0
    assert any(not torch.equal(start[k], result.weights[k]) for k in start if start[k].is_floating_point())
    trainer.finalize()
