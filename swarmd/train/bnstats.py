"""BatchNorm with the swarm's merged statistics (`[swarm] batchnorm_stats = "merged"`).

In training mode a BatchNorm layer normalises each batch by that batch's own mean and variance. Where a
site's batches hold one class (strong label skew: at Dirichlet alpha 0.1 most sites of the hard task hold
one), that subtracts exactly what the class has in common, so a site cannot learn its class from it,
and the running statistics it sends describe one class. FedBN does not help there: it keeps those
one-class statistics at the site (measured in docs/benchmarks.md).

With merged statistics every BatchNorm layer normalises by its running statistics during local
training too, and those are the round model's: the merge of all sites' statistics, so every site's
images are normalised alike. After its local steps a site re-estimates its layers' statistics at its
new weights over up to `local_steps` batches of its own training data (a forward pass without
gradients, a cumulative mean) and sends them with its update, where the merge rule averages them like
any other tensor. This is FixBN's idea (Zhong, Chen and Chao, arXiv:2303.06530: train with fixed global
statistics), with the statistics refreshed every round instead of frozen after a warm-up.

The pass leaves the round otherwise alone: the random generators are restored, so the next round sees
the batches it would have seen.
"""

from __future__ import annotations

from typing import Any

import torch

from swarmd.errors import TaskError, TrainingError
from swarmd.train.weights import check_finite


def batchnorm_layers(network: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (1d, 2d, 3d, sync) that keep running statistics."""
    return [
        m
        for m in network.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def require_batchnorm(network: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The network's BatchNorm layers; TaskError when it has none (the setting would do nothing). Checked
    where the initial model is built (deploy, daemon start, `swarm task check`), before any data."""
    layers = batchnorm_layers(network)
    if not layers:
        raise TaskError(
            'swarm.batchnorm_stats = "merged" but the bundle\'s network has no BatchNorm layer that '
            "tracks running statistics",
            hint="drop the key: the network has nothing for it to do",
        )
    return layers


class MergedStats:
    """Hooks a bundle's engine so that its BatchNorm layers train on the round's merged statistics and
    re-estimate them at the end of each round (see the module docstring)."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self._layers: list[torch.nn.modules.batchnorm._BatchNorm] = []
        self._frozen = False

    def attach(self, engine: Any, network: torch.nn.Module) -> None:
        """Refuses a network without BatchNorm layers (`require_batchnorm`)."""
        from ignite.engine import Events

        self._layers = require_batchnorm(network)
        for layer in self._layers:
            # The engine puts the network in training mode at every iteration: a pre-hook is the last
            # word on which statistics the layer normalises by.
            layer.register_forward_pre_hook(self._before_forward)
        engine.add_event_handler(Events.EPOCH_STARTED, self._freeze)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._re_estimate)

    def _before_forward(self, layer: torch.nn.Module, args: Any) -> None:
        if self._frozen:
            layer.training = False

    def _freeze(self, engine: Any) -> None:
        self._frozen = True

    def _re_estimate(self, engine: Any) -> None:
        self._frozen = False
        self.re_estimate(engine)

    def re_estimate(self, engine: Any) -> None:
        """The layers' running statistics at the network's weights, over up to `batches` batches of the
        engine's loader (its own `prepare_batch` and inferer; no gradients)."""
        network = engine.network
        training, seen = network.training, 0
        momenta = [layer.momentum for layer in self._layers]
        for layer in self._layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative mean over the batches, whatever their number
        devices = sorted({b.device.index or 0 for b in network.buffers() if b.device.type == "cuda"})
        try:
            network.train()
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                for i, batchdata in enumerate(engine.data_loader):
                    if i >= self.batches:
                        break
                    batch = engine.prepare_batch(
                        batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs
                    )
                    inputs, _, args, kwargs = batch if len(batch) == 4 else (*batch, (), {})
                    engine.inferer(inputs, network, *args, **kwargs)
                    seen += 1
        finally:
            for layer, momentum in zip(self._layers, momenta, strict=True):
                layer.momentum = momentum
            network.train(training)
        if seen == 0:
            raise TrainingError("re-estimating BatchNorm statistics saw no training data")
        check_finite(
            {f"{i}.{k}": b for i, layer in enumerate(self._layers) for k, b in layer.named_buffers()},
            "the re-estimated BatchNorm statistics",
        )
