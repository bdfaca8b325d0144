"""SCAFFOLD's client variate, option I: the mean gradient of the local loss at the round's model.

Karimireddy et al. 2020, eq. (4), option I sets c_i+ = g_i(x), the site's gradient at the server model
x. It needs a pass over local data but, unlike option II, no assumption about the optimizer: option II
reads the gradient back from the weight change (w_round - w_local) / (K lr), which only holds for plain
SGD steps. Under Adam that quotient is about one per coordinate whatever the gradient's size, so the
corrections c - c_i swamp the real gradients (the bundles here all train with Adam).

`GradientVariate` hooks the bundle's engine at `Events.EPOCH_STARTED` (one epoch is one round; MonaiAlgo
has loaded x by then) and runs the engine's own pieces: its loader, `prepare_batch`, inferer and loss,
on up to `batches` batches (one pass over the loader at most), in training mode as the round trains.
The pass leaves the round alone: the random generators are restored (the round sees the batches it
would have), so are the network's buffers (BatchNorm's running statistics), and the gradients cleared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from swarmd.errors import TrainingError
from swarmd.train.weights import check_finite

State = dict[str, torch.Tensor]


def require_plain_sgd(optimizer: Any) -> None:
    """Option II's variate, (w_round - w_local) / (K lr), is the mean gradient only under plain SGD."""
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.SGD):
        if not any(g.get("momentum") or g.get("nesterov") for g in optimizer.param_groups):
            return
        name = "SGD with momentum"
    raise TrainingError(
        f'swarm.scaffold_variate = "difference" (SCAFFOLD option II) needs plain SGD steps, but the '
        f"bundle's optimizer is {name}: its weight change is not K * lr * the gradient, so the variates "
        "would be mis-scaled",
        hint='set [swarm] scaffold_variate = "gradient" (option I, the default): it works with any optimizer',
    )


def _batch_size(inputs: Any) -> int:
    return int(inputs.shape[0]) if isinstance(inputs, torch.Tensor) and inputs.dim() > 0 else 1


def _batch_gradient(engine: Any, batchdata: Any) -> int:
    """Backward of one batch's mean loss, as the engine's iteration computes it; returns the batch size."""
    batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    inputs, targets, args, kwargs = batch if len(batch) == 4 else (*batch, (), {})
    scaler = engine.scaler if engine.amp else None
    with torch.autocast("cuda", enabled=scaler is not None, **(engine.amp_kwargs if scaler else {})):
        loss = engine.loss_function(engine.inferer(inputs, engine.network, *args, **kwargs), targets).mean()
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return _batch_size(inputs)


def mean_gradient(engine: Any, params: Mapping[str, torch.nn.Parameter], batches: int) -> State:
    """The sample-weighted mean gradient over up to `batches` batches of the engine's loader, on the CPU."""
    network = engine.network
    buffers = {k: b.detach().clone() for k, b in network.named_buffers()}
    sums = {k: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for k, p in params.items()}
    devices = sorted({p.device.index or 0 for p in params.values() if p.device.type == "cuda"})
    training, seen = network.training, 0
    try:
        network.train()
        with torch.random.fork_rng(devices=devices):
            for i, batchdata in enumerate(engine.data_loader):
                if i >= batches:
                    break
                for p in params.values():
                    p.grad = None
                n = _batch_gradient(engine, batchdata)
                scale = float(engine.scaler.get_scale()) if engine.amp and engine.scaler is not None else 1.0
                for k, p in params.items():
                    if p.grad is not None:
                        sums[k].add_(p.grad.double(), alpha=n / scale)
                seen += n
    finally:
        with torch.no_grad():
            for k, b in network.named_buffers():
                b.copy_(buffers[k])
        for p in params.values():
            p.grad = None
        network.train(training)
    if seen == 0:
        raise TrainingError("SCAFFOLD's gradient variate saw no training data", hint="is the datalist empty?")
    mean = {k: (s / seen).to(params[k].dtype).cpu() for k, s in sums.items()}
    check_finite(mean, "SCAFFOLD's gradient variate")  # it travels with the update: never NaN or inf
    return mean


class GradientVariate:
    """c_i+ of the round in progress: the mean gradient at the round's starting model (option I)."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self._params: dict[str, torch.nn.Parameter] = {}
        self._value: State | None = None

    def attach(self, engine: Any, network: torch.nn.Module) -> None:
        """Compute the variate at each round's start; refuses an engine without a supervised iteration."""
        from ignite.engine import Events
        from monai.engines import SupervisedTrainer

        if not isinstance(engine, SupervisedTrainer):
            raise TrainingError(
                "SCAFFOLD's gradient variate runs the bundle's SupervisedTrainer pieces (loader, inferer, "
                f"loss), but the bundle's trainer is {type(engine).__name__}",
                hint='with a plain SGD optimizer, set [swarm] scaffold_variate = "difference"',
            )
        self._params = {k: p for k, p in network.named_parameters() if p.requires_grad}
        engine.add_event_handler(Events.EPOCH_STARTED, self.on_epoch_started)

    def reset(self) -> None:
        """Forget the last round's variate (a round that stops before its first epoch leaves none)."""
        self._value = None

    def on_epoch_started(self, engine: Any) -> None:
        self._value = mean_gradient(engine, self._params, self.batches)

    def take(self) -> State:
        """The variate computed at the start of the round that just ran."""
        if self._value is None:
            raise TrainingError("SCAFFOLD's gradient variate was not computed this round")
        value, self._value = self._value, None
        return value
