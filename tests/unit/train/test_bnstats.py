"""Merged BatchNorm statistics (`swarmd.train.bnstats`) on a real MONAI SupervisedTrainer and a toy network,
then through `BundleTrainer` on the example BatchNorm bundle.

During the round every BatchNorm layer normalises by the statistics it was sent (it neither uses nor
updates the batch's); after the round its statistics are re-estimated at the new weights over the first
`batches` batches, equal to a plain torch reference (the mean of the batches' means and unbiased
variances). The pass leaves the random generators as they were. A network without BatchNorm is refused
where the initial model is built.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from swarmd.errors import TaskError
from swarmd.task import load_task
from swarmd.train import BundleTrainer, example_task_file, initial_model
from swarmd.train.bnstats import MergedStats, batchnorm_layers
from swarmd.train.demohard import generate_hard_data

X = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)) * 3 + 5  # far from mean 0, var 1
Y = torch.randn(12, 2, generator=torch.Generator().manual_seed(1))


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    # BatchNorm first, so its input is the data itself: the reference needs no forward pass.
    return torch.nn.Sequential(
        torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    )


def _batches(n: int, size: int) -> list[dict[str, torch.Tensor]]:
    return [{"image": X[i * size : (i + 1) * size], "label": Y[i * size : (i + 1) * size]} for i in range(n)]


def test_training_normalises_by_the_sent_statistics_and_the_round_re_estimates_them(supervised) -> None:
    net = _net()
    bn = batchnorm_layers(net)[0]
    sent_mean, sent_var = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0])
    bn.running_mean.copy_(sent_mean)
    bn.running_var.copy_(sent_var)
    seen: list[tuple[bool, torch.Tensor]] = []

    def record(layer: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # the round's iterations, not the re-estimation pass
            want = (args[0] - sent_mean) / torch.sqrt(sent_var + layer.eps) * layer.weight + layer.bias
            seen.append((layer.training, (out - want).abs().max().detach()))

    bn.register_forward_hook(record)
    batches = _batches(4, 3)
    engine = supervised(net, batches, steps=4)
    MergedStats(batches=2).attach(engine, net)
    engine.run()

    assert len(seen) == 4 and all(not training and err < 1e-5 for training, err in seen)
    # Re-estimated over the first 2 batches: PyTorch's cumulative mean of per-batch mean and unbiased var.
    first = [b["image"] for b in batches[:2]]
    want_mean = torch.stack([x.mean(0) for x in first]).mean(0)
    want_var = torch.stack([x.var(0, unbiased=True) for x in first]).mean(0)
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, want_var, atol=1e-6)
    assert bn.momentum == 0.1  # the layer's own momentum is back
    assert net.training  # and the mode the engine left it in


def test_the_pass_leaves_the_random_generators_alone(supervised) -> None:
    def run(with_stats: bool) -> torch.Tensor:
        net = _net()
        loader = DataLoader([{"image": X[i], "label": Y[i]} for i in range(12)], batch_size=3, shuffle=True)
        engine = supervised(net, loader, steps=2)
        if with_stats:
            MergedStats(batches=4).attach(engine, net)
        torch.manual_seed(7)
        engine.run()
        return torch.rand(3)  # the next draw: the same only if the pass consumed nothing

    assert torch.equal(run(True), run(False))


def test_a_network_without_batchnorm_is_refused_before_any_data(supervised) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.GroupNorm(1, 2))
    with pytest.raises(TaskError, match="no BatchNorm layer"):
        MergedStats(batches=1).attach(supervised(net, _batches(1, 3), steps=1), net)
    # Where deploy, daemon start and `swarm task check` build the initial model: the GroupNorm bundle.
    task = load_task(example_task_file("cxr_small"))
    with pytest.raises(TaskError, match="no BatchNorm layer"):
        initial_model(replace(task, swarm=replace(task.swarm, batchnorm_stats="merged")))


# --- the real trainer: the example BatchNorm bundle on generated files ------------------------------------
@pytest.mark.parametrize("stats", ["merged", "batch"])
def test_the_bundle_trainer_trains_on_the_sent_statistics_only_when_merged(
    stats: str, tmp_path: Path
) -> None:
    """`cxr_small_bn` through `BundleTrainer`, one round of 2 steps from chosen statistics: with "merged"
    every training forward of every BatchNorm layer is in eval mode and the update carries statistics
    re-estimated over the site's one batch (the counter restarts at 1); with the bundle's own ("batch")
    the layers train on batch statistics and count on from the sent counter."""
    demo = generate_hard_data(tmp_path / "data", sites=1, alpha=1.0, seed=0, n_per_site=10, n_test=4)
    task = load_task(example_task_file("cxr_small_bn"))
    task = replace(task, swarm=replace(task.swarm, local_steps=2, local_layers=(), batchnorm_stats=stats))
    trainer = BundleTrainer(task, demo.site_datalists[0], device="cpu", threads=1, workdir=tmp_path / "work")
    trainer.initialize()
    try:
        network = trainer._algo.trainer.network
        modes: list[bool] = []
        for layer in batchnorm_layers(network):
            layer.register_forward_hook(
                lambda m, a, o: modes.append(m.training) if torch.is_grad_enabled() else None
            )
        sent = initial_model(task)
        counters = [k for k in sent if k.endswith("num_batches_tracked")]
        for k in counters:
            sent[k] = torch.tensor(40)
        means = [k for k in sent if k.endswith("running_mean")]
        for k in means:
            sent[k] = torch.full_like(sent[k], 0.25)
        update = trainer.train(sent, round=0).weights
    finally:
        trainer.finalize()
    assert counters and modes and len(modes) == 2 * len(counters)  # 2 steps, every layer
    if stats == "merged":
        assert not any(modes)
        assert all(int(update[k]) == 1 for k in counters)  # one batch of 8 training images
    else:
        assert all(modes)
        assert all(int(update[k]) == 42 for k in counters)
    assert all(not torch.equal(update[k], sent[k]) and torch.isfinite(update[k]).all() for k in means)
