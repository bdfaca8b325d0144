"""SCAFFOLD through the real trainer on the 1-D bundle: the model carries the server variate c, an
update carries its control-variate part, the client variate c_i is stored in the work dir and a
restarted trainer (a new BundleTrainer on the same dir) continues from it; FedProx trains too.

Option I (the default) sends the mean gradient at the round's model; option II, (w_round - w_local) /
(K lr), runs on a copy of the bundle that steps with plain SGD and is refused with its Adam."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import pytest
import torch

from swarmd.errors import TrainingError
from swarmd.task import SCAFFOLD_PREFIX, WeightKind
from swarmd.train import BundleTrainer, initial_weights
from swarmd.train.remedies import VARIATE_FILE, split_variate
from swarmd.train.variate import mean_gradient


def _trainer(task, demo, workdir) -> BundleTrainer:
    trainer = BundleTrainer(task, demo.sites[0].datalist, device="cpu", threads=1, workdir=workdir)
    trainer.initialize()
    return trainer


def _sgd_bundle_task(task, tmp_path):
    """The task on a copy of its bundle whose optimizer is plain SGD (the bundle itself is unchanged)."""
    copy = shutil.copytree(task.bundle, tmp_path / "sgd_bundle")
    train = copy / "configs" / "train.json"
    train.write_text(train.read_text().replace("torch.optim.Adam", "torch.optim.SGD"))
    return replace(task, bundle=copy)


def test_option_two_is_the_weight_change_over_k_lr_and_refused_with_adam(demo_signal, make_task, tmp_path):
    task = make_task("ecg_densenet", local_steps=3, scaffold=True, scaffold_variate="difference")
    with pytest.raises(TrainingError, match=r"needs plain SGD steps.*optimizer is Adam"):
        _trainer(task, demo_signal, tmp_path / "adam")
    task = _sgd_bundle_task(replace(task, swarm=replace(task.swarm, send=WeightKind.DIFF)), tmp_path)
    trainer = _trainer(task, demo_signal, tmp_path / "work")
    result = trainer.train(initial_weights(task), round=1)
    diff, delta = split_variate(result.weights)
    lr = trainer._algo.trainer.optimizer.param_groups[0]["lr"]
    for name in delta:  # c_i+ - c_i = -c + (w_round - w_local) / (K lr), with c = c_i = 0
        torch.testing.assert_close(delta[name], -diff[name] / (3 * lr))
    trainer.finalize()


def test_scaffold_round_sends_the_variate_delta_and_survives_a_restart(demo_signal, make_task, tmp_path):
    task = make_task("ecg_densenet", local_steps=3, scaffold=True, send=WeightKind.DIFF)
    assert task.swarm.scaffold_variate == "gradient"
    start = initial_weights(task)
    model, c = split_variate(start)
    assert c and all(not bool(t.any()) for t in c.values())  # the initial model holds c = 0
    trainer = _trainer(task, demo_signal, tmp_path / "work")
    net = trainer._algo.trainer.network
    net.load_state_dict(model)
    want = mean_gradient(trainer._algo.trainer, dict(net.named_parameters()), batches=3)
    result = trainer.train(start, round=1)
    diff, delta = split_variate(result.weights)
    assert set(delta) == set(c) and set(diff) == set(model)
    for name in c:  # c_i+ - c_i = the mean gradient at the round's model, with c_i = 0
        torch.testing.assert_close(delta[name], want[name])
    assert any(bool(d.any()) for d in delta.values())
    assert (tmp_path / "work" / VARIATE_FILE).is_file()
    # the merged model of round 1 (one site: its diff applied, c + delta) scores without its c
    merged = {k: start[k] + result.weights[k] for k in start}
    assert math.isfinite(trainer.evaluate(merged, demo_signal.test_datalist)["auc"])
    trainer.finalize()

    again = _trainer(task, demo_signal, tmp_path / "work")  # a restart: a new trainer, the same dir
    stored = again._remedies._variate
    assert stored is not None
    for name in c:
        torch.testing.assert_close(stored.before(2)[name], delta[name])  # c_i after round 1
        assert not bool(stored.before(1)[name].any())  # a retrain of round 1 starts from c_i = 0 again
    second = again.train(merged, round=2)
    _, delta2 = split_variate(second.weights)
    assert set(delta2) == set(c) and all(bool(torch.isfinite(t).all()) for t in delta2.values())
    again.finalize()


def test_prox_mu_trains_the_unchanged_bundle(demo_signal, make_task, tmp_path):
    task = make_task("ecg_densenet", local_steps=2, prox_mu=0.5)
    trainer = _trainer(task, demo_signal, tmp_path / "work")
    start = initial_weights(task)
    assert not any(k.startswith(SCAFFOLD_PREFIX) for k in start)
    result = trainer.train(start, round=1)
    assert result.steps == 2 and math.isfinite(result.loss) and set(result.weights) == set(start)
    trainer.finalize()
