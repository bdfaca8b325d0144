"""FedProx and SCAFFOLD in local training, against small numpy references.

FedProx: one real MONAI SupervisedTrainer step on a toy linear model moves the weights by the analytic
gradient of loss + mu/2 ||w - w_round||^2 (and SCAFFOLD's c - c_i is added the same way). SCAFFOLD:
option II's client variate equals the numpy formula, and on a quadratic it is the mean of the local
raw gradients (the property the paper's option II rests on). The client variate file keeps the
variate before and after the round, so a retrain after a restart starts from the same c_i.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.engines import SupervisedTrainer

from swarmd.errors import TrainingError
from swarmd.task import SwarmSettings
from swarmd.train.remedies import (
    ClientVariate,
    Corrections,
    client_variate_update,
    join_variate,
    optimizer_lr,
    optimizer_steps,
    split_variate,
)

LR = 0.1


def _toy(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.randn(2, 3, generator=g))
        net.bias.copy_(torch.randn(2, generator=g))
    return net, torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g)


def _one_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, corr: Corrections | None) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[{"image": x, "label": y}],
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        epoch_length=1,
    )
    if corr is not None:
        corr.attach(trainer, net)
        start = {k: v.detach().clone() for k, v in net.state_dict().items()}
        anchor = {k: v + 0.5 for k, v in start.items()}  # w_round away from w, so the term acts
        shift = {"weight": torch.full((2, 3), 0.25), "bias": torch.tensor([-1.0, 2.0])}
        corr.begin_round(anchor, shift if corr.scaffold else {})
    trainer.run()


def _analytic(net: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """d/dW and d/db of mean((x W^T + b - y)^2), by hand."""
    W, b, X, Y = (t.detach().double().numpy() for t in (net.weight, net.bias, x, y))
    r = X @ W.T + b - Y
    scale = 2.0 / r.size
    return scale * r.T @ X, scale * r.sum(axis=0)


@pytest.mark.parametrize("mu,scaffold", [(0.0, False), (0.3, False), (0.0, True), (0.3, True)])
def test_one_step_follows_the_analytic_gradient_of_the_corrected_loss(mu, scaffold):
    net, x, y = _toy()
    gW, gb = _analytic(net, x, y)
    W0, b0 = net.weight.detach().double().numpy().copy(), net.bias.detach().double().numpy().copy()
    corr = Corrections(SwarmSettings(prox_mu=mu, scaffold=scaffold))
    _one_step(net, x, y, corr)
    # the proximal gradient mu * (w - w_round) with w_round = w + 0.5; SCAFFOLD's c - c_i as set above
    gW += mu * (W0 - (W0 + 0.5)) + (0.25 if scaffold else 0.0)
    gb += mu * (b0 - (b0 + 0.5)) + (np.array([-1.0, 2.0]) if scaffold else 0.0)
    np.testing.assert_allclose(net.weight.detach().numpy(), W0 - LR * gW, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.detach().numpy(), b0 - LR * gb, rtol=1e-5, atol=1e-6)


def test_the_handler_equals_autograd_of_the_proximal_loss():
    """The same step through autograd of loss + mu/2 ||w - w_round||^2, no handler."""
    mu = 0.7
    net, x, y = _toy(1)
    ref, _, _ = _toy(1)
    _one_step(net, x, y, Corrections(SwarmSettings(prox_mu=mu)))
    anchor = [p.detach() + 0.5 for p in ref.parameters()]
    loss = torch.nn.functional.mse_loss(ref(x), y)
    loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(ref.parameters(), anchor, strict=True))
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= LR * p.grad
    for got, want in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(got, want)


def test_off_attaches_nothing():
    net, x, y = _toy()
    corr = Corrections(SwarmSettings())
    assert not corr.active
    ref, _, _ = _toy()
    _one_step(net, x, y, corr)
    _one_step(ref, x, y, None)
    for got, want in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(got, want)


def test_option_two_variate_is_the_numpy_formula_and_the_mean_local_gradient():
    """K corrected SGD steps on f(w) = 1/2 ||A w - b||^2: c_i+ = mean of the raw gradients met."""
    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(5, 3)), rng.normal(size=5)
    w_round, c, c_i = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
    K, lr = 7, 0.05
    w, grads = w_round.copy(), []
    for _ in range(K):
        g = A.T @ (A @ w - b)
        grads.append(g)
        w = w - lr * (g - c_i + c)
    t = {"w": torch.from_numpy(w_round)}
    got = client_variate_update(
        {"w": torch.from_numpy(c_i)}, {"w": torch.from_numpy(c)}, t, {"w": torch.from_numpy(w)}, K, lr
    )["w"].numpy()
    np.testing.assert_allclose(got, c_i - c + (w_round - w) / (K * lr), rtol=1e-12)
    np.testing.assert_allclose(got, np.mean(grads, axis=0), rtol=1e-10)
    with pytest.raises(TrainingError, match="learning rate"):
        client_variate_update({"w": t["w"]}, {"w": t["w"]}, t, t, K, 0.0)


def test_reserved_prefix_splits_and_joins():
    model = {"a": torch.ones(2), "b": torch.zeros(1)}
    joined = join_variate(model, {"a": torch.full((2,), 3.0)})
    assert set(joined) == {"a", "b", "__scaffold_c__/a"}
    m, c = split_variate(joined)
    assert set(m) == {"a", "b"} and torch.equal(c["a"], torch.full((2,), 3.0))


def test_accumulated_gradients_take_the_correction_once_per_step():
    """Two mini-batches accumulated into one step: the same step as one batch of both, plus mu (w - w0)."""
    mu = 0.4
    net, x, y = _toy(2)
    ref, _, _ = _toy(2)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    halves = [{"image": x[:2], "label": y[:2]}, {"image": x[2:], "label": y[2:]}]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=halves,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        epoch_length=2,
        accumulation_steps=2,
    )
    corr = Corrections(SwarmSettings(prox_mu=mu))
    corr.attach(trainer, net)
    corr.begin_round({k: v.detach() + 0.5 for k, v in net.state_dict().items()}, {})
    trainer.run()
    assert optimizer_steps(trainer, 2) == 1 and optimizer_steps(trainer, 3) == 2
    gW, gb = _analytic(ref, x, y)
    want_w = ref.weight.detach().numpy() - LR * (gW - mu * 0.5)
    want_b = ref.bias.detach().numpy() - LR * (gb - mu * 0.5)
    np.testing.assert_allclose(net.weight.detach().numpy(), want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.detach().numpy(), want_b, rtol=1e-5, atol=1e-6)


def test_one_learning_rate_is_required():
    net = torch.nn.Linear(2, 1)
    assert optimizer_lr(torch.optim.SGD(net.parameters(), lr=0.2)) == 0.2
    two = torch.optim.SGD([{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.2}], lr=0.1)
    with pytest.raises(TrainingError, match="one learning rate"):
        optimizer_lr(two)


def test_client_variate_keeps_before_and_after_the_round(tmp_path):
    params = {"w": torch.zeros(3)}
    v = ClientVariate(tmp_path, params)
    assert torch.equal(v.before(1)["w"], torch.zeros(3))  # nothing stored: zeros
    v.save(1, {"w": torch.zeros(3)}, {"w": torch.ones(3)})
    again = ClientVariate(tmp_path, params)  # a restart
    assert torch.equal(again.before(1)["w"], torch.zeros(3))  # retraining round 1 starts where it did
    assert torch.equal(again.before(2)["w"], torch.ones(3))
    with pytest.raises(TrainingError, match="does not fit"):
        ClientVariate(tmp_path, {"other": torch.zeros(3)}).before(2)
    (tmp_path / "scaffold_client.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TrainingError, match="unreadable"):
        v.before(2)
