"""SCAFFOLD option I (`swarmd.train.variate`) on a real MONAI SupervisedTrainer and a toy network.

The variate equals a plain torch reference: the sample-weighted mean gradient of the loss at the round's
starting model, over every batch (uneven ones included) or the first `batches`. The pass leaves the
round alone: with shuffling, dropout and BatchNorm, the trained weights and running statistics equal
those of the same run without it. Option II is refused unless the optimizer is plain SGD.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from swarmd.errors import TrainingError
from swarmd.train.variate import GradientVariate, mean_gradient, require_plain_sgd

X = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
Y = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))


def _net(norm: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if not norm:
        return torch.nn.Linear(3, 2)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.3), torch.nn.Linear(4, 2)
    )


def _batches(sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    out, at = [], 0
    for n in sizes:
        out.append({"image": X[at : at + n], "label": Y[at : at + n]})
        at += n
    return out


def _reference(net: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """sum_b n_b grad(mean loss of b) / sum_b n_b, by autograd on a copy."""
    ref = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
    total = sum(int(b["image"].shape[0]) for b in batches)
    for b in batches:
        net.zero_grad()
        torch.nn.functional.mse_loss(net(b["image"]), b["label"]).backward()
        for k, p in net.named_parameters():
            ref[k] += p.grad * b["image"].shape[0] / total
    net.zero_grad()
    return ref


def test_the_variate_is_the_mean_gradient_at_the_rounds_model(supervised):
    net = _net()
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    batches = _batches([4, 4, 2])  # the last one smaller: weighted by its samples
    want = _reference(_net(), batches)
    engine = supervised(net, batches, steps=3)
    variate = GradientVariate(batches=3)
    variate.attach(engine, net)
    engine.run()  # the handler runs before the first step, at the starting weights
    got = variate.take()
    assert set(got) == {"weight", "bias"}
    for k in got:
        torch.testing.assert_close(got[k], want[k])
        assert not torch.equal(net.state_dict()[k], start[k])  # the round itself trained
    # the full-batch gradient of the mean loss over all 10 samples is the same thing
    full = _reference(_net(), [{"image": X, "label": Y}])
    torch.testing.assert_close(got["weight"], full["weight"])
    with pytest.raises(TrainingError, match="not computed"):
        variate.take()  # one variate per round


def test_a_non_finite_gradient_is_refused(supervised):
    batches = [{"image": torch.full((2, 3), float("inf")), "label": torch.zeros(2, 2)}]
    net = _net()
    with pytest.raises(TrainingError, match=r"gradient variate.*NaN or infinite"):
        mean_gradient(supervised(net, batches, steps=1), dict(net.named_parameters()), batches=1)


def test_a_fixed_number_of_batches(supervised):
    batches = _batches([4, 4, 2])
    net = _net()
    params = dict(net.named_parameters())
    got = mean_gradient(supervised(net, batches, steps=3), params, batches=1)
    want = _reference(_net(), batches[:1])
    for k in got:
        torch.testing.assert_close(got[k], want[k])


def _train(supervised, with_pass: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    torch.manual_seed(5)
    net = _net(norm=True)
    data = [{"image": X[i], "label": Y[i]} for i in range(10)]
    loader = DataLoader(data, batch_size=4, shuffle=True)
    engine = supervised(net, loader, steps=3)
    variate = GradientVariate(batches=2)
    if with_pass:
        variate.attach(engine, net)
    torch.manual_seed(7)  # the shuffling and dropout the round draws
    engine.run()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, (
        variate.take() if with_pass else None
    )


def test_the_pass_leaves_the_round_as_it_would_have_been(supervised):
    plain, _ = _train(supervised, with_pass=False)
    passed, variate = _train(supervised, with_pass=True)
    assert variate is not None and all(bool(torch.isfinite(v).all()) for v in variate.values())
    assert set(plain) == set(passed) and any("running_mean" in k for k in plain)
    for k in plain:  # same batches, same dropout masks, same BatchNorm statistics
        torch.testing.assert_close(passed[k], plain[k])


def test_an_engine_without_a_supervised_iteration_is_refused():
    from ignite.engine import Engine

    with pytest.raises(TrainingError, match="SupervisedTrainer") as err:
        GradientVariate(batches=1).attach(Engine(lambda e, b: None), _net())
    assert "difference" in (err.value.hint or "")


def test_option_two_needs_plain_sgd():
    params = list(_net().parameters())
    require_plain_sgd(torch.optim.SGD(params, lr=0.1))
    require_plain_sgd(torch.optim.SGD(params, lr=0.1, weight_decay=1e-4))  # decay is part of the gradient
    for opt, name in (
        (torch.optim.Adam(params, lr=0.1), "Adam"),
        (torch.optim.SGD(params, lr=0.1, momentum=0.9), "SGD with momentum"),
    ):
        with pytest.raises(TrainingError, match=f"optimizer is {name}") as err:
            require_plain_sgd(opt)
        assert 'scaffold_variate = "gradient"' in (err.value.hint or "")
